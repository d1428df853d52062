# shellcheck shell=bash disable=SC2034  # the settings below are used by the sourcing scripts
# Shared settings and helpers of deploy/local/{up,down,status,venv}. Sourced, never run.
#
# Everything the local stack writes lives under one state folder:
#   $STATE_DIR/<service>/{data,logs,conf}   and   $STATE_DIR/<service>/<service>.pid
# Only processes whose pid file is there (and whose command line still matches) are ever
# signalled, so `down` never touches a Redis or broker it did not start.

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LOCAL_DIR/../.." && pwd)
STATE_DIR=${OTA_STATE_DIR:-$REPO_DIR/.state}
VENV_DIR=$REPO_DIR/.venv
VENV_PY=$VENV_DIR/bin/python

HOST=127.0.0.1
KAFKA_PORT=${OTA_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${OTA_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP_OPTS=${OTA_KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}
REDIS_PORT=${OTA_REDIS_PORT:-6379}
MQTT_PORT=${OTA_MQTT_PORT:-1883}
MQTT_PLATFORM_PORT=${OTA_MQTT_PLATFORM_PORT:-1884}
MQTT_PLATFORM_USER=${OTA_MQTT_PLATFORM_USER:-ota-platform}
MQTT_PLATFORM_PASSWORD=${OTA_MQTT_PLATFORM_PASSWORD:-ota-platform-secret}
PARTITIONS=${OTA_PARTITIONS:-12}
TOPIC_PREFIX=${OTA_TOPIC_PREFIX:-}
KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT
# The device broker (HiveMQ CE + the project's extension, deploy/broker; docs/broker.md):
# devices on TLS (OTA_MQTT_TLS_PORT) and, for development, plain MQTT (OTA_MQTT_PORT); the
# services on the platform listener. It checks each device's IoTDA credentials in the
# credential store (Redis db $CREDENTIALS_DB), which every stack on this broker shares.
BROKER_TLS_PORT=${OTA_MQTT_TLS_PORT:-8883}
BROKER_PORT=$MQTT_PORT
BROKER_PLATFORM_PORT=$MQTT_PLATFORM_PORT
BROKER_METRICS_PORT=${OTA_BROKER_METRICS_PORT:-9410}
CREDENTIALS_DB=${OTA_CREDENTIALS_DB:-1}
CREDENTIALS_REDIS_URL=redis://$HOST:$REDIS_PORT/$CREDENTIALS_DB
BROKER_HEAP_OPTS=${OTA_BROKER_HEAP_OPTS:--Xms128m -Xmx768m}
BROKER_SRC=$REPO_DIR/deploy/broker
BROKER_LIB=$STATE_DIR/broker/lib
TLS_DIR=$STATE_DIR/tls

# Seconds to wait for a service to answer after start, and for it to exit on SIGTERM.
START_TIMEOUT=${OTA_START_TIMEOUT_S:-120}
STOP_TIMEOUT=${OTA_STOP_TIMEOUT_S:-30}

SERVICES=(kafka redis broker)

say() {
  local who=$1
  shift
  printf '%-10s %s\n' "$who:" "$*"
}
die() { printf 'deploy/local: error: %s\n' "$*" >&2; exit 1; }

check_settings() {
  local name value
  for name in KAFKA_PORT KAFKA_CONTROLLER_PORT REDIS_PORT MQTT_PORT MQTT_PLATFORM_PORT; do
    value=${!name}
    if [[ ! $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
      die "OTA_$name=$value is not a TCP port (1-65535)"
    fi
  done
  local ports="$KAFKA_PORT $KAFKA_CONTROLLER_PORT $REDIS_PORT $MQTT_PORT $MQTT_PLATFORM_PORT"
  [[ $(tr ' ' '\n' <<<"$ports" | sort -u | wc -l) -eq 5 ]] \
    || die "the five service ports must differ, got: $ports"
  if [[ ! $PARTITIONS =~ ^[0-9]+$ ]] || ((PARTITIONS < 1)); then
    die "OTA_PARTITIONS=$PARTITIONS is not a positive integer"
  fi
  [[ -n $MQTT_PLATFORM_USER && $MQTT_PLATFORM_USER != *[[:space:]:]* ]] \
    || die "OTA_MQTT_PLATFORM_USER must be non-empty without spaces or ':'"
  [[ -n $MQTT_PLATFORM_PASSWORD ]] || die "OTA_MQTT_PLATFORM_PASSWORD must not be empty"
}

# --- processes and ports -------------------------------------------------------------

check_broker_settings() {
  local name value
  for name in BROKER_TLS_PORT BROKER_METRICS_PORT; do
    value=${!name}
    if [[ ! $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
      die "OTA_$name=$value is not a TCP port (1-65535)"
    fi
  done
  local ports="$KAFKA_PORT $KAFKA_CONTROLLER_PORT $REDIS_PORT $MQTT_PORT $MQTT_PLATFORM_PORT"
  ports+=" $BROKER_TLS_PORT $BROKER_METRICS_PORT"
  [[ $(tr ' ' '\n' <<<"$ports" | sort -u | wc -l) -eq 7 ]] \
    || die "the broker's TLS and metrics ports must differ from each other and the other services', got: $ports"
  [[ $CREDENTIALS_DB =~ ^[0-9]+$ ]] || die "OTA_CREDENTIALS_DB=$CREDENTIALS_DB is not a Redis database number"
}

pid_file() { printf '%s/%s/%s.pid' "$STATE_DIR" "$1" "$1"; }

# The executable each service runs as; a pid whose command line lacks it is a stale file.
service_command() {
  case $1 in
    kafka) echo "kafka.Kafka" ;;
    redis) echo "redis-server" ;;
    broker) echo "io.otarollout.broker.Launcher" ;;
    *) die "unknown service $1" ;;
  esac
}

# Prints the pid of a running service started by these scripts; fails if there is none.
running_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -r $file ]] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(service_command "$1")" || return 1
  echo "$pid"
}

port_open() { (: <"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Fails with the name of whatever holds a port we are about to listen on.
require_free_port() {
  local port=$1 what=$2 holder
  port_open "$port" || return 0
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' | head -n 1 || true)
  die "$what: port $port on $HOST is already in use${holder:+ by $holder}." \
    "Stop that process (a distribution's own service? systemctl disable --now <name>)" \
    "or choose another port."
}

# Runs `$@` until it succeeds; fails once `timeout` seconds have passed.
wait_until() {
  local timeout=$1
  shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# SIGTERM, up to STOP_TIMEOUT seconds, then SIGKILL. Only given pids from running_pid.
stop_pid() {
  local service=$1 pid=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  wait_until "$STOP_TIMEOUT" pid_gone "$pid" && return 0
  say "$service" "still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL to $pid"
  kill -KILL "$pid" 2>/dev/null || return 0
  wait_until 5 pid_gone "$pid" || die "$service (pid $pid) survived SIGKILL"
}

show_log_tail() {
  local file
  for file in "$@"; do
    [[ -s $file ]] || continue
    printf -- '--- last lines of %s ---\n' "$file" >&2
    tail -n 40 "$file" >&2
  done
}

# --- Python environment --------------------------------------------------------------

# The virtualenv is rebuilt when either the project's requirements or the pinned versions change.
CONSTRAINTS=$REPO_DIR/deploy/constraints.txt
pyproject_hash() { cat "$REPO_DIR/pyproject.toml" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1; }

ensure_venv() {
  local stamp=$VENV_DIR/.ota-pyproject.sha256 python=${OTA_PYTHON:-python3}
  if [[ -x $VENV_PY && -r $stamp && $(cat "$stamp") == "$(pyproject_hash)" ]]; then
    return 0
  fi
  if [[ ! -x $VENV_PY ]]; then
    command -v "$python" >/dev/null || die "$python not found (set OTA_PYTHON to Python 3.11+)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || die "$python is older than 3.11 (set OTA_PYTHON to Python 3.11+)"
    say venv "creating $VENV_DIR"
    "$python" -m venv "$VENV_DIR"
    "$VENV_PY" -m pip install -q --upgrade pip || die "could not upgrade pip in $VENV_DIR"
  fi
  local log=$VENV_DIR/.ota-pip-install.log
  say venv "pip install -e '.[test,bench]' -c deploy/constraints.txt (first run or either changed; log $log)"
  if ! (cd "$REPO_DIR" && "$VENV_PY" -m pip install -c "$CONSTRAINTS" -e '.[test,bench]') >"$log" 2>&1; then
    show_log_tail "$log"
    die "pip install failed; full log in $log"
  fi
  pyproject_hash >"$stamp"
}

# --- health checks (also used by status) -----------------------------------------------

kafka_answers() {
  "$VENV_PY" "$LOCAL_DIR/wait_kafka.py" --bootstrap "$KAFKA_BOOTSTRAP" --timeout "${1:-5}"
}

redis_answers() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# The broker's /health says 200 once HiveMQ started and every listener accepts connections
# (a device-side MQTT probe would show up as a fake device, and needs the control plane).
broker_answers() {
  port_open "$BROKER_PLATFORM_PORT" || return 1
  curl -fsS -m 2 -o /dev/null "http://$HOST:$BROKER_METRICS_PORT/health"
}

service_answers() {
  case $1 in
    kafka) kafka_answers 5 >/dev/null 2>&1 ;;
    redis) redis_answers ;;
    broker) broker_answers ;;
  esac
}
