#!/bin/sh
# Writes the platform password file from the environment, then runs the broker.
# The hash lives in the data volume, never in the repository.
set -eu
: "${MQTT_PLATFORM_USER:?}" "${MQTT_PLATFORM_PASSWORD:?}"
file=/mosquitto/data/platform.passwd
rm -f "$file"
mosquitto_passwd -c -b "$file" "$MQTT_PLATFORM_USER" "$MQTT_PLATFORM_PASSWORD"
chown mosquitto:mosquitto "$file"
chmod 0600 "$file"
exec mosquitto -c /mosquitto/config/mosquitto.conf
