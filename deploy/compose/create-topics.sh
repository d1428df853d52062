#!/bin/sh
# One-shot job: creates the platform's topics (idempotent: --if-not-exists), like
# deploy/local/create_topics.py. Event topics keep 7 days (the inbox must cover the longest
# job); control-plane topics are compacted, keyed by id, and are the system of record.
set -eu
bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
partitions=${OTA_PARTITIONS:-12}
replicas=${REPLICATION_FACTOR:-1}
prefix=${OTA_TOPIC_PREFIX:-}
week_ms=604800000
topics=/opt/kafka/bin/kafka-topics.sh

create() {
  "$topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$prefix$1" --partitions "$partitions" --replication-factor "$replicas" \
    --config "$2"
}

for name in ota.inbox ota.commands ota.job-events ota.dead-letters ota.task-events; do
  create "$name" "retention.ms=$week_ms"
done
for name in ota.packages ota.tasks ota.devices; do
  create "$name" "cleanup.policy=compact"
done
"$topics" --bootstrap-server "$bootstrap" --list
