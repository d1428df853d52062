"""The gateway's outage record on the real Redis (database 15): written with the expiry
the record's kind gives it, withdrawn only while it is still the one stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gateway.broker_outages import RedisOutageStore
from ota import broker_outage
from ota.broker_outage import BrokerOutage
from ota.clock import now_ms

SCRATCH_DB = 15


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    url = f"{redis_url.rsplit('/', 1)[0] if redis_url.count('/') > 2 else redis_url}/{SCRATCH_DB}"
    made: redis.Redis[bytes] = redis.Redis.from_url(url)
    made.delete(broker_outage.KEY)
    yield made
    made.delete(broker_outage.KEY)
    made.close()


def test_an_ongoing_outage_expires_soon_and_an_ended_one_after_the_key_life(
    client: redis.Redis[bytes],
) -> None:
    store = RedisOutageStore(lambda: client)
    since = now_ms()
    store.record(BrokerOutage(since))
    assert client.get(broker_outage.KEY) == broker_outage.encode(BrokerOutage(since))
    assert 0 < client.pttl(broker_outage.KEY) <= broker_outage.ONGOING_LIFE_MS
    store.record(BrokerOutage(since, since + 1_000))
    assert client.pttl(broker_outage.KEY) > broker_outage.KEY_LIFE_MS - 60_000


def test_a_withdrawal_removes_only_the_record_it_names(client: redis.Redis[bytes]) -> None:
    store = RedisOutageStore(lambda: client)
    mine, theirs = BrokerOutage(now_ms()), BrokerOutage(now_ms() + 5)
    store.record(theirs)  # another gateway's outage, written after ours
    store.withdraw(mine)
    assert client.get(broker_outage.KEY) == broker_outage.encode(theirs)
    store.withdraw(theirs)
    assert client.get(broker_outage.KEY) is None
