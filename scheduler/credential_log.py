"""Device credentials recorded on their compacted topic (`ota.credentials`, key = device
id), and put back from it into a credential store that was emptied.

The store (Redis, scheduler/credentials.py) is what the broker checks; the topic is its
system of record, so a store emptied (FLUSHALL, a restart without its data, a new
instance) gets every device's record back without re-importing the fleet's secrets. A
value is the store's hash as it stands, as a JSON object of strings (its secret is sealed
there already: scheduler/secretbox.py, never in clear); a deletion is a tombstone.

Each change script stamps its record with the next `SEQ` and lists the device in
`PENDING`, in the same call. `publish` sends each listed device's record as the store holds
it, waits for Kafka, and reads it again: a record that changed meanwhile is sent again, so
the topic's last record of a device is never older than the store's, and one that did not
leaves `PENDING` (only while its `seq` is still the one sent). A change whose send failed,
or whose process died before it, stays listed: `drain` sends it within `DRAIN_S`.

`restore` runs whenever the store lacks its mark (`MARK`): on the first start with the
topic, and within `DRAIN_S` after the store was emptied under a running scheduler. It
puts back every record the store lacks (not one deleted within the last hour, which
`deleted_key` remembers), raises `SEQ` above the restored records', lists for sending every
record the topic lacks (registered before the topic existed), then sets the mark. Until
it has run, a device whose record is gone is refused by the broker as unknown.

Device CAs are on the same topic, keyed `ca/<fingerprint>` (scheduler/device_cas.py
records them itself, before the store changes); `restore` puts back those the store lacks
and records those the topic lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import cast

import orjson
import redis.asyncio
from cryptography import x509
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from ota.clock import now_ms
from ota.metrics import gauge
from ota.settings import CommonSettings
from scheduler.bus import Out, Producer
from scheduler.credentials import PENDING, SEQ, STORE_P, deleted_key, record_key
from scheduler.device_cas import DEVICE_CAS, TOPIC_PREFIX, fingerprint
from scheduler.rebuild import read_latest

log = logging.getLogger(__name__)

MARK = f"{STORE_P}cred-restored"  # set by `restore`: gone means the store was emptied
DRAIN_S = 5.0
BATCH = 1000  # devices per send and per put-back script call
ROUNDS = 3  # sends of a device whose record keeps changing, before the drain takes it
# The fields a record may hold (credentials.py's scripts write no others).
RECORD_FIELDS = frozenset({"kid", "box", "on", "auth", "created_ms", "rotated_ms", "seq"})

Record = dict[str, str]

UNRECORDED = gauge(
    "scheduler",
    "credentials_unrecorded",
    "Device credential changes in force in the store, not yet on the credentials topic "
    "(a store lost meanwhile would come back without them)",
)

# Leave `PENDING` for each device whose record still has the `seq` sent ('' = still none).
# No KEYS (one device each, prefix in ARGV[1], as credentials.py's import names them);
# ARGV[2] `PENDING`, ARGV[3] JSON [[device, seq], ...]. Returns how many left it.
_SETTLE = """
local n = 0
for _, e in ipairs(cjson.decode(ARGV[3])) do
  if (redis.call('HGET', ARGV[1] .. e[1], 'seq') or '') == e[2] then
    n = n + redis.call('SREM', ARGV[2], e[1])
  end
end
return n
"""

# Put records back unless present or deleted lately. ARGV[1] record prefix, ARGV[2] the
# deleted marks' prefix, ARGV[3] `SEQ`, ARGV[4] JSON [[device, [field, value, ...]], ...],
# ARGV[5] the highest `seq` among them. Returns how many were put back.
_PUT_BACK = """
local n = 0
for _, e in ipairs(cjson.decode(ARGV[4])) do
  local k = ARGV[1] .. e[1]
  if redis.call('EXISTS', k) == 0 and redis.call('EXISTS', ARGV[2] .. e[1]) == 0 then
    redis.call('HSET', k, unpack(e[2]))
    n = n + 1
  end
end
if (tonumber(redis.call('GET', ARGV[3])) or 0) < tonumber(ARGV[5]) then
  redis.call('SET', ARGV[3], ARGV[5])
end
return n
"""


class UnreadableRecord(ValueError):  # noqa: N818 - names what is wrong
    """A topic value that is not a credential record: skipped by the restore, logged."""


def encode(record: Mapping[str, str] | None) -> bytes | None:
    """The topic's value for a record as the store holds it; None (a tombstone) when gone."""
    return None if not record else orjson.dumps(dict(record), option=orjson.OPT_SORT_KEYS)


def decode(device_id: str, raw: bytes) -> Record:
    """A topic value back into the store's fields, checked."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableRecord(f"credentials of {device_id!r}: not JSON") from exc
    if not isinstance(value, dict) or not value:
        raise UnreadableRecord(f"credentials of {device_id!r}: not a JSON object of fields")
    unknown = set(value) - RECORD_FIELDS
    if unknown:
        raise UnreadableRecord(f"credentials of {device_id!r}: unknown fields {sorted(unknown)}")
    strings = all(isinstance(v, str) for v in value.values())
    sealed = ("kid" in value) == ("box" in value)
    if not strings or not sealed or value.get("on") not in ("0", "1"):
        raise UnreadableRecord(f"credentials of {device_id!r}: malformed values")
    if not value.get("seq", "0").isdigit():
        raise UnreadableRecord(f"credentials of {device_id!r}: malformed seq")
    return value


class CredentialLog:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        settings: CommonSettings,
        *,
        recording: bool = True,
    ) -> None:
        """`recording` False: the topic does not exist (checked at start); changes stay
        listed, unsent, for a scheduler started once it does, and nothing is restored."""
        self._r, self._producer, self._settings = r, producer, settings
        self._recording = recording
        self._topic = settings.topics.credentials
        if not recording:
            log.error(
                "the credentials topic does not exist: credential changes wait unrecorded and "
                "an emptied credential store cannot be put back; create it "
                "(deploy/topics.toml) and restart the scheduler",
                extra={"topic": self._topic},
            )
        self._settle = r.register_script(_SETTLE)
        self._put_back = r.register_script(_PUT_BACK)

    async def publish(self, device_ids: Sequence[str]) -> None:
        """Send the devices' records as the store holds them (see the module's text). Kafka
        failing is logged, not raised: the devices stay in `PENDING` for `drain`."""
        if not self._recording:
            return
        todo = list(dict.fromkeys(device_ids))
        for _ in range(ROUNDS):
            sent = await self._read(todo)
            try:
                await self._producer.send(Out(self._topic, d, encode(sent[d])) for d in todo)
            except KafkaError as exc:
                log.warning(
                    "credential changes not yet recorded in Kafka; the drain sends them",
                    extra={"devices": len(todo), "error": repr(exc)},
                )
                return
            now = await self._read(todo)
            changed = [d for d in todo if _seq(now[d]) != _seq(sent[d])]
            settled = [[d, _seq(sent[d])] for d in todo if _seq(now[d]) == _seq(sent[d])]
            if settled:
                await self._settle(args=[record_key(""), PENDING, orjson.dumps(settled)])
            if not changed:
                return
            todo = changed

    async def record_ca(self, key: str, pem: bytes | None) -> None:
        """A device CA's record (scheduler/device_cas.py), sent before the store changes."""
        await self._producer.send([Out(self._topic, key, pem)])

    async def drain(self) -> int:
        """Restore the store if it lost its mark, then send every pending device; how many
        were sent."""
        if not self._recording:
            UNRECORDED.set(await self._r.scard(PENDING))
            return 0
        if not await self._r.exists(MARK):
            await self.restore()
        sent = 0
        while members := cast(list[bytes], await self._r.srandmember(PENDING, BATCH)):
            batch = [m.decode() for m in members]
            await self.publish(batch)
            sent += len(batch)
            left = await self._r.smismember(PENDING, batch)  # type: ignore[no-untyped-call]
            if all(left):
                break  # none sent: Kafka is failing, or they keep changing; next round
        UNRECORDED.set(await self._r.scard(PENDING))
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """`drain` every `DRAIN_S` until `stop`; a Redis or Kafka error waits for the next."""
        while not stop.is_set():
            try:
                await self.drain()
            except (RedisError, KafkaError) as exc:
                log.warning("credential drain failed; retried", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DRAIN_S)

    async def restore(self) -> dict[str, int]:
        """Put back what the store lacks from the topic and list what the topic lacks;
        set `MARK` last. Safe beside changes and on every replica at once."""
        loop = asyncio.get_running_loop()
        latest = (await loop.run_in_executor(None, read_latest, self._settings, (self._topic,)))[
            self._topic
        ]
        done = {"credentials": 0, "credentials_unreadable": 0, "credentials_recorded": 0}
        batch: list[tuple[str, list[str]]] = []
        top = 0
        cas: dict[str, bytes] = {}
        for device_id, raw in latest.items():
            if raw is None:
                continue
            if device_id.startswith(TOPIC_PREFIX):
                cas[device_id[len(TOPIC_PREFIX) :]] = raw
                continue
            try:
                record = decode(device_id, raw)
            except UnreadableRecord as exc:
                log.error("credentials not restored", extra={"reason": str(exc)})
                done["credentials_unreadable"] += 1
                continue
            top = max(top, int(record.get("seq", "0")))
            batch.append((device_id, [x for kv in record.items() for x in kv]))
            if len(batch) == BATCH:
                done["credentials"] += await self._put(batch, top)
                batch = []
        if batch:
            done["credentials"] += await self._put(batch, top)
        done["credentials_recorded"] = await self._list_unrecorded(latest)
        done |= await self._restore_cas(cas)
        await self._r.set(MARK, now_ms())
        if any(done.values()):
            log.warning("restored device credentials from Kafka", extra=done)
        return done

    async def _put(self, batch: list[tuple[str, list[str]]], top: int) -> int:
        args = (record_key(""), deleted_key(""), SEQ, orjson.dumps(batch), top)
        return int(await self._put_back(args=args))

    async def _list_unrecorded(self, latest: Mapping[str, bytes | None]) -> int:
        """List in `PENDING` each record of the store the topic has no live record of."""
        prefix = record_key("")
        listed = 0
        unrecorded: list[str] = []
        async for key in self._r.scan_iter(match=prefix + "*", count=BATCH, _type="HASH"):
            device_id = key.decode()[len(prefix) :]
            if latest.get(device_id) is None:
                unrecorded.append(device_id)
            if len(unrecorded) == BATCH:
                listed += await self._r.sadd(PENDING, *unrecorded)
                unrecorded = []
        if unrecorded:
            listed += await self._r.sadd(PENDING, *unrecorded)
        return listed

    async def _restore_cas(self, on_topic: Mapping[str, bytes]) -> dict[str, int]:
        """Device CAs: put back those the store lacks (not removed within the hour), record
        those the topic lacks."""
        done = {"device_cas": 0, "device_cas_unreadable": 0, "device_cas_recorded": 0}
        held = {k.decode(): v for k, v in (await self._r.hgetall(DEVICE_CAS)).items()}
        for print_, pem in on_topic.items():
            if print_ in held or await self._r.exists(deleted_key(TOPIC_PREFIX + print_)):
                continue
            try:
                readable = fingerprint(x509.load_pem_x509_certificate(pem)) == print_
            except ValueError:
                readable = False
            if not readable:
                log.error("device CA not restored: not its certificate", extra={"ca": print_})
                done["device_cas_unreadable"] += 1
                continue
            done["device_cas"] += await self._r.hsetnx(DEVICE_CAS, print_, pem)
        for print_ in held.keys() - on_topic.keys():
            await self.record_ca(TOPIC_PREFIX + print_, held[print_])
            done["device_cas_recorded"] += 1
        return done

    async def _read(self, device_ids: Sequence[str]) -> dict[str, Record]:
        pipe = self._r.pipeline(transaction=False)
        for d in device_ids:
            pipe.hgetall(record_key(d))
        found = await pipe.execute()
        return {
            d: {k.decode(): v.decode() for k, v in fields.items()}
            for d, fields in zip(device_ids, found, strict=True)
        }


def _seq(record: Mapping[str, str]) -> str:
    return record.get("seq", "")
