#!/bin/sh
# One-shot job: creates the platform's topics (idempotent: --if-not-exists), like
# deploy/local/create_topics.py. The topics and their settings come from deploy/topics.toml
# (the block below is generated from it; `make lint` fails when they differ).
set -eu
bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
partitions=${OTA_PARTITIONS:-12}
replicas=${REPLICATION_FACTOR:-1}
prefix=${OTA_TOPIC_PREFIX:-}
topics=/opt/kafka/bin/kafka-topics.sh

# create NAME KEY=VALUE...: one topic with its Kafka settings.
create() {
  name=$1
  shift
  configs=""
  for setting in "$@"; do
    configs="$configs --config $setting"
  done
  # shellcheck disable=SC2086 # $configs is split on purpose (settings have no spaces)
  "$topics" --bootstrap-server "$bootstrap" --create --if-not-exists \
    --topic "$prefix$name" --partitions "$partitions" --replication-factor "$replicas" \
    $configs
}

# BEGIN topics: generated from deploy/topics.toml by deploy/topics.py --write
create ota.inbox cleanup.policy=delete retention.ms=604800000
create ota.commands cleanup.policy=delete retention.ms=604800000
create ota.job-events cleanup.policy=delete retention.ms=604800000
create ota.dead-letters cleanup.policy=delete retention.ms=604800000
create ota.task-events cleanup.policy=delete retention.ms=604800000
create ota.packages cleanup.policy=compact
create ota.tasks cleanup.policy=compact
create ota.task-devices cleanup.policy=compact
create ota.devices cleanup.policy=compact
create ota.audit cleanup.policy=delete retention.ms=31536000000
create ota.api-keys cleanup.policy=compact
create ota.webhooks cleanup.policy=compact
create ota.credentials cleanup.policy=compact
# END topics
"$topics" --bootstrap-server "$bootstrap" --list
