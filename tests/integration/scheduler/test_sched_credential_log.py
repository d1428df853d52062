"""Device credentials recorded on their topic and put back from it, on the real Kafka and
Redis: every change recorded as the store holds it, an emptied store restored (after a
restart and under a running scheduler), records made before the topic recorded, deleted
and unreadable records left out, concurrent changes converging on the store, and device
CAs recorded and put back beside them."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
import redis
import redis.asyncio

from ota.clock import now_ms
from ota.device_auth import credentials_for
from ota.settings import Topics
from scheduler.bus import Out, Producer
from scheduler.credential_log import MARK, CredentialLog
from scheduler.credentials import PENDING, Credentials, deleted_key, record_key
from scheduler.device_cas import DEVICE_CAS
from scheduler.rebuild import read_latest
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys, SecretBox
from tests.integration.scheduler.conftest import StartHarness
from tests.integration.scheduler.sched_harness import API_KEYS, Harness, eventually, make_settings
from tests.x509_kit import make_ca

BROKER_KEY = "test-broker-key-0123"
PEM = {"Content-Type": "text/plain"}
SECRET = "given-secret_0123"


def device(prefix: str = "log") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def path(device_id: str, op: str = "") -> str:
    return f"/v1/devices/{device_id}/credentials" + (f"/{op}" if op else "")


async def start(start_harness: StartHarness, **env: str) -> Harness:
    return await start_harness(OTA_API_KEYS=f"{API_KEYS},{BROKER_KEY}:broker", **env)


async def reason(h: Harness, device_id: str, secret: str) -> str:
    c = credentials_for(device_id, secret, now_ms())
    async with httpx.AsyncClient(
        base_url=h.base_url, headers={"Authorization": f"Bearer {BROKER_KEY}"}, timeout=30
    ) as broker:
        body = {"clientid": c.client_id, "username": c.username, "password": c.password}
        answer = await broker.post("/v1/broker/authenticate", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["reason"])


async def on_topic(h: Harness) -> dict[str, bytes | None]:
    topic = h.topics.credentials
    return (await asyncio.to_thread(read_latest, h.settings.common, (topic,)))[topic]


def stored(r: redis.Redis[bytes], device_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(record_key(device_id)).items()}


def cred_keys(r: redis.Redis[bytes]) -> list[bytes]:
    return list(r.scan_iter(match=b"ota:sched:cred*"))


async def restored(r: redis.Redis[bytes]) -> None:
    """Wait for a restore to have run (the mark set), as the start's first drain does."""

    async def marked() -> bool:
        return bool(r.exists(MARK))

    await eventually(marked, "the credential store's restore")


@pytest.fixture
async def h(start_harness: StartHarness) -> Harness:
    return await start(start_harness)


async def test_every_change_is_recorded_as_the_store_holds_it(
    h: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    given, generated, gone, cert = device(), device(), device(), device()
    assert (await h.admin.post(path(given), json={"secret": SECRET})).status_code == 201
    assert (await h.admin.post(path(generated))).status_code == 201
    assert (await h.admin.post(path(given, "rotate"))).status_code == 200
    assert (await h.admin.post(path(generated, "disable"))).status_code == 200
    assert (await h.admin.post(path(gone), json={"secret": SECRET})).status_code == 201
    assert (await h.admin.delete(path(gone))).status_code == 204
    assert (await h.admin.post(path(cert, "certificate"))).status_code == 201
    imported = [device("imp") for _ in range(3)]
    body = "".join(f"{d},{SECRET}\n" for d in imported).encode()
    assert (await h.admin.post("/v1/credentials/import", content=body)).status_code == 200

    # Each call answers once its record is on the topic: nothing is left pending.
    assert sched_redis.scard(PENDING) == 0
    topic = await on_topic(h)
    for d in (given, generated, cert, *imported):
        record = orjson.loads(topic[d] or b"null")
        assert record == stored(sched_redis, d), d
        assert "secret" not in record
        assert SECRET not in (topic[d] or b"").decode()
    assert topic[gone] is None  # a tombstone
    assert orjson.loads(topic[generated] or b"{}")["on"] == "0"
    assert orjson.loads(topic[cert] or b"{}")["auth"] == "certificate"


async def test_an_emptied_store_is_put_back_on_the_next_start(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start(start_harness)
    kept, disabled, gone = device(), device(), device()
    for d in (kept, disabled, gone):
        assert (await first.admin.post(path(d), json={"secret": SECRET})).status_code == 201
    rotated = (await first.admin.post(path(kept, "rotate"))).json()["secret"]
    await first.admin.post(path(disabled, "disable"))
    await first.admin.delete(path(gone))
    before = {d: stored(sched_redis, d) for d in (kept, disabled)}
    await first.stop()

    sched_redis.flushdb()
    second = await start(start_harness, OTA_SCHEDULER_PORT=str(first.settings.http_port))
    await restored(sched_redis)
    assert {d: stored(sched_redis, d) for d in (kept, disabled)} == before
    assert not sched_redis.exists(record_key(gone))
    assert await reason(second, kept, rotated) == "ok"
    assert await reason(second, kept, SECRET) == "bad_password"
    assert await reason(second, disabled, SECRET) == "disabled"
    assert await reason(second, gone, SECRET) == "unknown_device"
    # The next change numbers above the restored ones: its record is the topic's last.
    await second.admin.post(path(kept, "rotate"), json={"secret": "after-restore-01"})
    assert int(stored(sched_redis, kept)["seq"]) > int(before[kept]["seq"])
    record = orjson.loads((await on_topic(second))[kept] or b"{}")
    assert record == stored(sched_redis, kept)


async def test_a_store_emptied_under_a_running_scheduler_is_put_back(
    h: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    d = device()
    assert (await h.admin.post(path(d), json={"secret": SECRET})).status_code == 201
    record = stored(sched_redis, d)
    await restored(sched_redis)
    sched_redis.delete(*cred_keys(sched_redis))  # the credential store alone emptied
    assert await reason(h, d, SECRET) == "unknown_device"

    async def back() -> bool:
        return stored(sched_redis, d) == record

    await eventually(back, "the record to be put back", timeout_s=30)
    assert await reason(h, d, SECRET) == "ok"


async def test_records_made_before_the_topic_are_recorded(
    h: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    old = device("old")
    await restored(sched_redis)
    record = {"kid": "dev", "box": "AAAA", "on": "1", "created_ms": "1"}  # no seq, not listed
    sched_redis.hset(record_key(old), mapping=dict(record.items()))
    sched_redis.delete(MARK)  # as on the first start with the topic

    async def recorded() -> bool:
        return (await on_topic(h)).get(old) is not None

    await eventually(recorded, "the older record on the topic", timeout_s=30)
    assert orjson.loads((await on_topic(h))[old] or b"{}") == record
    assert stored(sched_redis, old) == record  # the restore did not change it


async def test_deleted_and_unreadable_records_are_not_put_back(
    h: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    good, deleted, bad = device(), device(), device()
    await restored(sched_redis)
    live = {"on": "1", "auth": "certificate", "created_ms": "5", "seq": "7"}
    for d in (good, deleted):
        h.produce_raw(h.topics.credentials, d, orjson.dumps(live))
    h.produce_raw(h.topics.credentials, bad, b'{"on": "1", "secret": "in clear"}')
    sched_redis.set(deleted_key(deleted), "1")  # deleted within the hour
    sched_redis.delete(MARK)  # the store emptied: the next drain restores it

    async def back() -> bool:
        return bool(sched_redis.exists(MARK)) and stored(sched_redis, good) == live

    await eventually(back, "the readable record to be put back", timeout_s=30)
    assert not sched_redis.exists(record_key(deleted))
    assert not sched_redis.exists(record_key(bad))
    assert int(sched_redis.get("ota:sched:cred-seq") or 0) >= 7


async def test_concurrent_changes_converge_on_the_store(
    h: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    devices = [device("race") for _ in range(8)]
    for d in devices:
        assert (await h.admin.post(path(d), json={"secret": SECRET})).status_code == 201

    async def churn(d: str) -> None:
        for i in range(6):
            op = ("disable", "enable", "rotate")[i % 3]
            response = await h.admin.post(path(d, op))
            assert response.status_code == 200, response.text

    await asyncio.gather(*(churn(d) for d in devices for _ in range(2)))

    async def settled() -> dict[str, Any] | None:
        if sched_redis.scard(PENDING):
            return None
        return await on_topic(h)

    topic = await eventually(settled, "every change sent", timeout_s=30)
    for d in devices:
        assert orjson.loads(topic[d] or b"null") == stored(sched_redis, d), d


class ChangingProducer:
    """The real producer; the record changes in the store while the first send is under
    way (the interleaving `publish` must survive: what it sent is no longer the store's)."""

    def __init__(self, inner: Producer, change: Callable[[], Awaitable[None]] | None) -> None:
        self._inner, self._change = inner, change

    async def send(self, records: Iterable[Out], *, patient: bool = False) -> None:
        batch = list(records)
        if self._change is not None:
            change, self._change = self._change, None
            await change()
        await self._inner.send(batch, patient=patient)


async def test_a_change_during_the_send_is_sent_again(
    h: Harness, aredis: redis.asyncio.Redis[bytes], sched_redis: redis.Redis[bytes]
) -> None:
    d = device()
    store = Credentials(aredis, SecretBox(CredentialKeys.parse(DEV_CREDENTIAL_KEYS)), [])
    await store.register(d, SECRET)  # no recorder: listed, not sent
    assert sched_redis.sismember(PENDING, d)
    inner = Producer(h.settings.common)
    try:

        async def rotate() -> None:
            await store.rotate(d, "rotated-during-send")

        changing = ChangingProducer(inner, rotate)
        await CredentialLog(aredis, cast(Producer, changing), h.settings.common).publish([d])
    finally:
        await inner.close()
    assert orjson.loads((await on_topic(h))[d] or b"null") == stored(sched_redis, d)
    assert not sched_redis.sismember(PENDING, d)


async def test_device_cas_are_recorded_and_put_back(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start(start_harness)
    kept, removed, older = (make_ca(f"log CA {uuid.uuid4().hex[:6]} {n}") for n in range(3))
    for ca in (kept, removed):
        added = await first.admin.post("/v1/device-cas", content=ca.pem(), headers=PEM)
        assert added.status_code == 201, added.text
    assert (await first.admin.delete(f"/v1/device-cas/{removed.fingerprint()}")).status_code == 204
    topic = await on_topic(first)
    assert topic[f"ca/{kept.fingerprint()}"] == sched_redis.hget(DEVICE_CAS, kept.fingerprint())
    assert topic[f"ca/{removed.fingerprint()}"] is None
    await first.stop()

    sched_redis.flushdb()
    sched_redis.hset(DEVICE_CAS, older.fingerprint(), older.pem())  # added before the topic
    second = await start(start_harness, OTA_SCHEDULER_PORT=str(first.settings.http_port))
    await restored(sched_redis)
    held = sched_redis.hgetall(DEVICE_CAS)
    assert set(held) == {kept.fingerprint().encode(), older.fingerprint().encode()}
    assert (await on_topic(second))[f"ca/{older.fingerprint()}"] == older.pem().encode()


async def test_without_the_topic_changes_wait_listed_and_it_is_logged(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    sched_topics: Topics,
    sched_redis: redis.Redis[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = dataclasses.replace(sched_topics, credentials=f"test.no-creds.{uuid.uuid4().hex}")
    env = {"OTA_API_KEYS": f"{API_KEYS},{BROKER_KEY}:broker"}
    h = Harness(make_settings(kafka_bootstrap, redis_url, tmp_path, missing, **env))
    await h.start()
    try:
        d = device()
        assert (await h.admin.post(path(d), json={"secret": SECRET})).status_code == 201
        assert await reason(h, d, SECRET) == "ok"  # in force, though unrecorded
        assert sched_redis.sismember(PENDING, d)  # for a scheduler started with the topic
        assert not sched_redis.exists(MARK)  # nothing to restore from
    finally:
        await h.close()
    assert any(
        "credentials topic" in r.getMessage() and "does not exist" in r.getMessage()
        for r in caplog.records
    )
