"""Download progress: which bytes each device got, and the started/finished records.

The event loop only appends notes `(device, package, size, start, end)` to a bounded
queue; a thread of its own merges them every `flush_ms`, applies each (device, package)
batch to Redis with one Lua script, and produces the `DownloadRecord`s the script asks
for to the inbox (keyed by device, idempotent producer). Keeping the delivered intervals
in Redis (`ota:edge:dl:<package>:<device>`) means a download resumed on another edge
replica still finishes. Kafka or Redis being slow or down never blocks a request: notes
wait in the queue (bounded; overflow is counted and dropped).

A record is produced at least once per cycle: should the process die between the Redis
update and the produce, that one record is lost, and the worker's download windows
(which never depend on the edge) still bound the job.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Protocol

import redis
from kafka.errors import KafkaError

from download_edge import intervals
from download_edge import metrics as m
from ota.clock import now_ms
from ota.records import DownloadPhase, DownloadRecord, encode

log = logging.getLogger(__name__)

KEY_PREFIX = "ota:edge:dl:"
MAX_QUEUE = 200_000
MAX_INTERVALS = 256  # a device fragmenting its download past this stops being tracked

# KEYS[1]: the (package, device) hash {iv = "s:e,s:e...", fin = "1" once finished}
# ARGV[1]: package size; ARGV[2]: TTL seconds; ARGV[3]: interval cap;
# ARGV[4..]: start, end pairs (half-open, sorted, disjoint).
# Returns {started, finished}: 1 when this call began or completed a download cycle.
# A finished download fetched again from byte 0 starts a new cycle (a retried job).
MERGE_SCRIPT = """
local size = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
local old = redis.call('HMGET', KEYS[1], 'iv', 'fin')
local ivs = {}
local fin = old[2] == '1'
local started = 0
if not old[1] or (fin and tonumber(ARGV[4]) == 0) then
  started = 1
  fin = false
else
  for s, e in string.gmatch(old[1], '(%d+):(%d+)') do
    ivs[#ivs + 1] = {tonumber(s), tonumber(e)}
  end
end
for i = 4, #ARGV, 2 do
  ivs[#ivs + 1] = {tonumber(ARGV[i]), tonumber(ARGV[i + 1])}
end
table.sort(ivs, function(a, b) return a[1] < b[1] end)
local merged = {}
for _, iv in ipairs(ivs) do
  local last = merged[#merged]
  if last and iv[1] <= last[2] then
    if iv[2] > last[2] then last[2] = iv[2] end
  else
    merged[#merged + 1] = {iv[1], iv[2]}
  end
end
local finished = 0
if not fin and #merged == 1 and merged[1][1] == 0 and merged[1][2] >= size then
  finished = 1
  fin = true
end
if #merged > cap then return {started, finished} end
local parts = {}
for i, iv in ipairs(merged) do parts[i] = iv[1] .. ':' .. iv[2] end
redis.call('HSET', KEYS[1], 'iv', table.concat(parts, ','), 'fin', fin and '1' or '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {started, finished}
"""


class Sink(Protocol):
    """Where download records go (a KafkaProducer in production)."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


Key = tuple[str, str]  # device id, package sha256


class ProgressRecorder:
    def __init__(
        self,
        store: redis.Redis[bytes],
        sink: Sink,
        topic: str,
        *,
        flush_ms: int,
        ttl_s: int,
    ) -> None:
        self._store = store
        self._sink = sink
        self._topic = topic
        self._flush_s = flush_ms / 1000
        self._ttl_s = ttl_s
        self._notes: deque[tuple[str, str, int, int, int]] = deque()
        self._carry: dict[Key, tuple[int, list[intervals.Interval]]] = {}
        self._stop = threading.Event()
        self._script = store.register_script(MERGE_SCRIPT)
        self._thread = threading.Thread(target=self._run, name="edge-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def note(self, device_id: str, package_sha256: str, size: int, start: int, end: int) -> None:
        """Bytes [start, end) of the package reached the device's socket. Loop-safe, O(1)."""
        if end <= start:
            return
        if len(self._notes) >= MAX_QUEUE:
            m.progress_dropped.inc()
            return
        self._notes.append((device_id, package_sha256, size, start, end))

    def close(self, timeout_s: float) -> None:
        """Flush what is queued (bounded by `timeout_s`) and stop the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        self._sink.flush(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush_once()
        self.flush_once()

    def flush_once(self) -> None:
        batch = self._carry
        self._carry = {}
        while self._notes:
            device_id, sha, size, start, end = self._notes.popleft()
            _, known = batch.get((device_id, sha), (size, []))
            batch[(device_id, sha)] = (size, intervals.merge(known, [(start, end)]))
        if not batch:
            return
        try:
            outcomes = self._apply(batch)
        except redis.RedisError as exc:
            log.warning("progress store unavailable", extra={"error": str(exc)})
            self._keep(batch)
            return
        for (device_id, sha), (started, finished) in zip(batch, outcomes, strict=True):
            if started:
                self._emit(device_id, sha, DownloadPhase.STARTED)
            if finished:
                self._emit(device_id, sha, DownloadPhase.FINISHED)

    def _apply(self, batch: dict[Key, tuple[int, list[intervals.Interval]]]) -> list[Any]:
        pipe = self._store.pipeline(transaction=False)
        for (device_id, sha), (size, ivs) in batch.items():
            flat = [n for iv in ivs for n in iv]
            self._script(
                keys=[f"{KEY_PREFIX}{sha}:{device_id}"],
                args=[size, self._ttl_s, MAX_INTERVALS, *flat],
                client=pipe,
            )
        return [tuple(int(x) for x in result) for result in pipe.execute()]

    def _keep(self, batch: dict[Key, tuple[int, list[intervals.Interval]]]) -> None:
        for key, value in batch.items():
            if len(self._carry) >= MAX_QUEUE // 10:
                m.progress_dropped.inc()
            else:
                self._carry[key] = value

    def _emit(self, device_id: str, sha: str, phase: DownloadPhase) -> None:
        record = DownloadRecord(
            device_id=device_id, package_sha256=sha, phase=phase, at_ms=now_ms()
        )
        try:
            self._sink.send(self._topic, key=device_id.encode(), value=encode(record))
        except KafkaError as exc:
            m.progress_dropped.inc()
            log.error(
                "download record not produced",
                extra={"device_id": device_id, "package_sha256": sha, "error": str(exc)},
            )
            return
        m.events.labels(phase.value).inc()
