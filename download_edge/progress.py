"""Download progress: which bytes each device got, and the started/finished records.

The event loop only appends notes `(device, package, size, start, end)` to a bounded
queue; a thread of its own merges them every `flush_ms`, applies each (device, package)
batch to Redis with one Lua script, and produces the `DownloadRecord`s the script asks
for to the inbox (keyed by device, idempotent producer). Keeping the delivered intervals
in Redis (`ota:edge:{dl<shard>}:<package>:<device>`) means a download resumed on another
edge replica still finishes; a finished one's hash is deleted once Kafka has its records. Kafka or Redis being slow or down never blocks a request: notes
wait in the queue (bounded; overflow is counted and dropped).

Nothing is lost between the Redis update and the produce: the script that decides a
record is due also stores it in the hash (`ps`/`pf`: its timestamp) and lists the hash
in an outbox (`ota:edge:{dl<shard>}:outbox`, scored by time). Kafka's acknowledgement
clears both; any replica re-produces entries left unacknowledged for `RESEND_AFTER_MS`
(the edge died, or Kafka refused), byte for byte the same record. So each record arrives
at least once; the worker ignores a repeated download record.

Both scripts touch a hash and its outbox, so on a Redis Cluster the two must share a
slot: the outbox is split in `OUTBOX_SHARDS` shards, a device's hashes go with the shard
of its id (CRC-32), and the hash tag `{dl<shard>}` keeps a shard on one slot. Many shards
spread the edge's writes over the cluster's masters; the resend pass reads them all.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import redis
from kafka.errors import KafkaError

from download_edge import intervals
from download_edge import metrics as m
from download_edge.delivery import Delivered
from ota.clock import now_ms
from ota.records import DownloadPhase, DownloadRecord, encode
from ota.redis_clients import REDIS_ERRORS
from ota.redis_scripts import ScriptRunner, call

log = logging.getLogger(__name__)

KEY_PREFIX = "ota:edge:{dl"
OUTBOX_SHARDS = 256  # slots the edge's progress spreads over (masters it can use)
MAX_QUEUE = 200_000
MAX_INTERVALS = 256  # a device fragmenting its download past this stops being tracked
UNCONFIRMED_CAP = 8  # unconfirmed intervals kept per download (a cut connection makes one)
RESEND_AFTER_MS = 30_000  # far beyond a produce's acknowledgement on a healthy broker
RESEND_BATCH = 500
PHASE_FIELDS = {DownloadPhase.STARTED: "ps", DownloadPhase.FINISHED: "pf"}

# KEYS[1]: the (package, device) hash {iv = "s:e,s:e...", fin = "1" once finished,
#   ps / pf = time of a started / finished record not yet acknowledged by Kafka,
#   t0 = when the cycle started, sv = bytes sent in the cycle (the finished record's figures),
#   ud = "s:e,..." bytes written on connections that ended before the device acknowledged
#   them (download_edge/delivery.py), at most UNCONFIRMED_CAP of them, the newest kept};
# KEYS[2]: its shard's outbox (sorted set of such hashes, by time); one slot with KEYS[1].
# ARGV[1]: package size; ARGV[2]: TTL seconds; ARGV[3]: interval cap; ARGV[4]: now (ms);
# ARGV[5]: n, the number of delivered intervals; ARGV[6..5+2n]: their start, end pairs
# (half-open, sorted, disjoint); the rest: unconfirmed start, end pairs.
# A device that asks for bytes from s, inside an unconfirmed interval [us, ue) (us < s <= ue),
# vouches that it holds [us, s): it resumes where its copy ends. That part counts as
# delivered, so a download cut while bytes were in flight still finishes when resumed.
# Returns {started, finished, bytes sent in the cycle, ms since it started}: started /
# finished are 1 when this call began or completed a download cycle.
# A finished download fetched again from byte 0 starts a new cycle (a retried job).
MERGE_SCRIPT = """
local size = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
local now = ARGV[4]
local n = tonumber(ARGV[5])
local old = redis.call('HMGET', KEYS[1], 'iv', 'fin', 't0', 'sv', 'ud')
local ivs, uds = {}, {}
local fin = old[2] == '1'
local started = 0
local t0, sent = tonumber(old[3] or now), tonumber(old[4] or '0')
for s, e in string.gmatch(old[5] or '', '(%d+):(%d+)') do
  uds[#uds + 1] = {tonumber(s), tonumber(e)}
end
if n == 0 and not old[1] then
  started = -1  -- nothing delivered yet: keep the unconfirmed bytes only
elseif not old[1] or (fin and tonumber(ARGV[6]) == 0) then
  if fin then uds = {} end  -- a new cycle: what the last one left unconfirmed is void
  started = 1
  fin = false
  t0, sent = tonumber(now), 0
else
  for s, e in string.gmatch(old[1], '(%d+):(%d+)') do
    ivs[#ivs + 1] = {tonumber(s), tonumber(e)}
  end
end
local function vouch(s)
  for i, u in ipairs(uds) do
    if u[1] < s and s <= u[2] then
      ivs[#ivs + 1] = {u[1], s}
      sent = sent + s - u[1]
      table.remove(uds, i)
      return
    end
  end
end
for i = 6 + 2 * n, #ARGV, 2 do
  local s = tonumber(ARGV[i])
  vouch(s)
  uds[#uds + 1] = {s, tonumber(ARGV[i + 1])}
end
for i = 6, 5 + 2 * n, 2 do
  local s, e = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  vouch(s)
  ivs[#ivs + 1] = {s, e}
  sent = sent + e - s
end
while #uds > UNCONFIRMED_CAP do table.remove(uds, 1) end
local uparts = {}
for i, u in ipairs(uds) do uparts[i] = u[1] .. ':' .. u[2] end
if started == -1 then
  redis.call('HSET', KEYS[1], 'ud', table.concat(uparts, ','))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {0, 0, 0, 0}
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
local took = tonumber(now) - t0
if #merged > cap then return {started, finished, sent, took} end
local parts = {}
for i, iv in ipairs(merged) do parts[i] = iv[1] .. ':' .. iv[2] end
redis.call('HSET', KEYS[1], 'iv', table.concat(parts, ','), 'fin', fin and '1' or '0',
  't0', t0, 'sv', sent, 'ud', table.concat(uparts, ','))
if started == 1 then
  redis.call('HDEL', KEYS[1], 'pf')  -- an earlier cycle's record is superseded
  redis.call('HSET', KEYS[1], 'ps', now)
end
if finished == 1 then redis.call('HSET', KEYS[1], 'pf', now) end
if started == 1 or finished == 1 then redis.call('ZADD', KEYS[2], now, KEYS[1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {started, finished, sent, took}
""".replace("UNCONFIRMED_CAP", str(UNCONFIRMED_CAP))

# KEYS[1]: the hash; KEYS[2]: the outbox. ARGV[1]: the field (ps/pf); ARGV[2]: its time.
# Clears the field if it still holds that record, and the outbox entry once none is left.
# A finished download whose records Kafka has all taken is forgotten: the worker has its
# finished record, and a device fetching the package again starts a new cycle either way
# (the hash was about 216 bytes of every finished device's Redis memory for its whole TTL).
ACK_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('HEXISTS', KEYS[1], 'ps') == 0 and redis.call('HEXISTS', KEYS[1], 'pf') == 0 then
  redis.call('ZREM', KEYS[2], KEYS[1])
  if redis.call('HGET', KEYS[1], 'fin') == '1' then redis.call('DEL', KEYS[1]) end
end
return 1
"""


class Sink(Protocol):
    """Where download records go (the record producer, ota/kafka_producer.py, in production)."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


Key = tuple[str, str]  # device id, package sha256
# Per download in a batch: package size, delivered intervals, unconfirmed intervals.
Merged = tuple[int, list[intervals.Interval], list[intervals.Interval]]
Ack = tuple[str, str, DownloadPhase, int]  # device id, package sha256, phase, at_ms


def shard_of(device_id: str) -> int:
    return zlib.crc32(device_id.encode()) % OUTBOX_SHARDS


def _tag(shard: int) -> str:
    return f"{KEY_PREFIX}{shard}}}:"


def hash_key(device_id: str, sha: str) -> str:
    return f"{_tag(shard_of(device_id))}{sha}:{device_id}"


def outbox_key(shard: int) -> str:
    return f"{_tag(shard)}outbox"


def parse_hash_key(key: str) -> Key | None:
    """(device id, sha256) of a progress hash's key; None for a key of another shape."""
    if not key.startswith(KEY_PREFIX):
        return None
    rest = key.removeprefix(KEY_PREFIX)
    shard, closed, rest = rest.partition("}:")
    sha, sep, device_id = rest.partition(":")
    if not closed or not shard.isdigit() or not sep or len(sha) != 64 or not device_id:
        return None
    if int(shard) != shard_of(device_id):
        return None
    return device_id, sha


class ProgressRecorder:
    def __init__(
        self,
        store: redis.Redis[bytes],
        sink: Sink,
        topic: str,
        *,
        flush_ms: int,
        ttl_s: int,
        resend_after_ms: int = RESEND_AFTER_MS,
    ) -> None:
        self._store = store
        self._sink = sink
        self._topic = topic
        self._flush_s = flush_ms / 1000
        self._ttl_s = ttl_s
        self._resend_after_ms = resend_after_ms
        self._notes: deque[tuple[str, str, int, int, int, bool]] = deque()
        self._carry: dict[Key, Merged] = {}
        self._acks: deque[Ack] = deque()  # appended by the producer's thread
        self._next_resend_ms = 0
        self._stop = threading.Event()
        self._scripts = ScriptRunner(store, (MERGE_SCRIPT, ACK_SCRIPT))
        self._thread = threading.Thread(target=self._run, name="edge-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def note(
        self,
        device_id: str,
        package_sha256: str,
        size: int,
        start: int,
        end: int,
        *,
        delivered: bool = True,
    ) -> None:
        """Bytes [start, end) of the package reached the device (its TCP acknowledged
        them), or with `delivered=False` were written on a connection that ended before
        it did. Loop-safe, O(1)."""
        if end <= start:
            return
        if len(self._notes) >= MAX_QUEUE:
            m.progress_dropped.inc()
            return
        self._notes.append((device_id, package_sha256, size, start, end, delivered))

    def note_spans(self, spans: list[Delivered], *, delivered: bool) -> None:
        """`note` for each of a connection's spans that has an owner."""
        for owner, offset, count in spans:
            if owner is not None:
                device_id, sha, size = owner
                self.note(device_id, sha, size, offset, offset + count, delivered=delivered)

    def pending(self) -> int:
        """(device, package) pairs merged but not yet in Redis (kept while it is down)."""
        return len(self._carry)

    def close(self, timeout_s: float) -> None:
        """Flush what is queued (bounded by `timeout_s`) and stop the thread."""
        self._stop.set()
        self._thread.join(timeout_s)
        self._sink.flush(timeout=timeout_s)
        self._guarded(self._clear_acked)

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush_once()
        self.flush_once()

    def flush_once(self) -> None:
        """One cycle: merge the queued notes into Redis and produce the records they make
        due, clear what Kafka acknowledged, and re-produce outbox entries left behind."""
        self._guarded(self._clear_acked)
        self._merge_notes()
        if now_ms() >= self._next_resend_ms:
            self._next_resend_ms = now_ms() + self._resend_after_ms // 4
            self._guarded(self.resend_unacknowledged)

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except REDIS_ERRORS as exc:
            log.warning("progress store unavailable", extra={"error": str(exc)})

    def _merge_notes(self) -> None:
        batch = self._carry
        self._carry = {}
        while self._notes:
            device_id, sha, size, start, end, delivered = self._notes.popleft()
            _, known, unconfirmed = batch.get((device_id, sha), (size, [], []))
            if delivered:
                known = intervals.merge(known, [(start, end)])
            else:
                unconfirmed = [*unconfirmed, (start, end)]
            batch[(device_id, sha)] = (size, known, unconfirmed)
        if not batch:
            return
        at = now_ms()
        try:
            outcomes = self._apply(batch, at)
        except REDIS_ERRORS as exc:
            log.warning("progress store unavailable", extra={"error": str(exc)})
            self._keep(batch)
            return
        for (device_id, sha), (started, finished, sent, took) in zip(batch, outcomes, strict=True):
            if started:
                self._emit(device_id, sha, DownloadPhase.STARTED, at)
            if finished:
                self._emit(device_id, sha, DownloadPhase.FINISHED, at, sent, took)

    def _apply(self, batch: dict[Key, Merged], at: int) -> list[Any]:
        steps = [
            call(
                MERGE_SCRIPT,
                [hash_key(device_id, sha), outbox_key(shard_of(device_id))],
                [
                    size,
                    self._ttl_s,
                    MAX_INTERVALS,
                    at,
                    len(ivs),
                    *(n for iv in ivs for n in iv),
                    *(n for iv in unconfirmed for n in iv),
                ],
            )
            for (device_id, sha), (size, ivs, unconfirmed) in batch.items()
        ]
        return [tuple(int(x) for x in result) for result in self._scripts.run(steps)]

    def _keep(self, batch: dict[Key, Merged]) -> None:
        for key, value in batch.items():
            if len(self._carry) >= MAX_QUEUE // 10:
                m.progress_dropped.inc()
            else:
                self._carry[key] = value

    def _clear_acked(self) -> None:
        if not self._acks:
            return
        steps = []
        while self._acks:
            device_id, sha, phase, at = self._acks.popleft()
            keys = [hash_key(device_id, sha), outbox_key(shard_of(device_id))]
            steps.append(call(ACK_SCRIPT, keys, [PHASE_FIELDS[phase], at]))
        self._scripts.run(steps)

    def resend_unacknowledged(self) -> int:
        """Produce again the records whose acknowledgement never came (at most about
        RESEND_BATCH per call, the rest on the next); how many."""
        pipe = self._store.pipeline(transaction=False)
        outboxes = [outbox_key(shard) for shard in range(OUTBOX_SHARDS)]
        for outbox in outboxes:
            pipe.zrangebyscore(
                outbox, "-inf", now_ms() - self._resend_after_ms, start=0, num=RESEND_BATCH
            )
        due = [(o, raw) for o, found in zip(outboxes, pipe.execute(), strict=True) for raw in found]
        sent = 0
        for outbox, raw in due[:RESEND_BATCH]:
            key = raw.decode()
            found = parse_hash_key(key)
            ps, pf, t0, sent_bytes = self._store.hmget(key, ["ps", "pf", "t0", "sv"])
            if found is None or (ps is None and pf is None):
                self._store.zrem(outbox, key)  # acknowledged, expired or not ours
                continue
            self._store.zadd(outbox, {key: now_ms()})  # next try after another wait
            if ps is not None:
                self._emit(*found, DownloadPhase.STARTED, int(ps))
                sent += 1
            if pf is not None:
                took = int(pf) - int(t0 or pf)
                self._emit(*found, DownloadPhase.FINISHED, int(pf), int(sent_bytes or 0), took)
                sent += 1
        if sent:
            m.events_resent.inc(sent)
            log.warning("download records produced again", extra={"count": sent})
        return sent

    def _emit(
        self,
        device_id: str,
        sha: str,
        phase: DownloadPhase,
        at: int,
        bytes_served: int = 0,
        duration_ms: int = 0,
    ) -> None:
        record = DownloadRecord(
            device_id=device_id,
            package_sha256=sha,
            phase=phase,
            bytes_served=bytes_served,
            duration_ms=duration_ms,
            at_ms=at,
        )
        try:
            future = self._sink.send(self._topic, key=device_id.encode(), value=encode(record))
        except KafkaError as exc:
            self._not_produced(device_id, sha, exc)
            return
        m.events.labels(phase.value).inc()
        if future is not None:
            future.add_callback(lambda _meta: self._acks.append((device_id, sha, phase, at)))
            future.add_errback(lambda exc: self._not_produced(device_id, sha, exc))

    @staticmethod
    def _not_produced(device_id: str, sha: str, exc: BaseException) -> None:
        log.error(
            "download record not produced yet; the outbox produces it again",
            extra={"device_id": device_id, "package_sha256": sha, "error": str(exc)},
        )
