"""Group membership in liveness (ota/health.py): a consumer out of its group for longer
than the group limit fails /livez, on a hand-moved clock and through the real server."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from ota.health import Health, serve_health_and_metrics
from ota.metrics import REGISTRY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _health(clock: Clock) -> Health:
    return Health(limit_s=30.0, clock=clock, group_limit_s=120.0)


def test_a_member_is_live_and_listed_as_checked() -> None:
    clock = Clock()
    health = _health(clock)
    health.membership("ota-workers")
    clock.now += 120.0  # exactly the limit: still a member
    assert health.live().ok
    assert health.ready().ok
    assert health.live().body() == b"ok\nfresh: group ota-workers\n"


def test_out_of_the_group_longer_than_the_group_limit_fails_and_names_it() -> None:
    clock = Clock()
    health = _health(clock)
    poll, member = health.beat("kafka-poll ota-workers"), health.membership("ota-workers")
    clock.now += 60.0  # twice the loop limit: a rebalance or an outage, not yet a verdict
    poll()
    assert health.live().ok
    clock.now += 35.4
    poll()  # still polling, still no group
    member_of_other = health.membership("ota-gateway")  # joined later: its own count
    member_of_other()
    clock.now += 24.6
    poll()
    assert health.live().ok
    clock.now += 0.6
    poll()
    live = health.live()
    assert not live.ok
    assert live.reasons == ("no group: ota-workers for 121 s",)
    assert live.body() == b"no group: ota-workers for 121 s\n"
    assert health.ready().reasons == ("no group: ota-workers for 121 s",)
    member()  # rejoined
    assert health.live().ok


def test_a_consumer_that_never_joins_counts_from_its_registration() -> None:
    clock = Clock()
    health = _health(clock)
    health.membership("g")  # never stamped again
    clock.now += 119.0
    assert health.live().ok
    clock.now += 2.0
    assert health.live().reasons == ("no group: g for 121 s",)


def test_retired_or_stopping_no_longer_counts() -> None:
    clock = Clock()
    health = _health(clock)
    member = health.membership("g")
    clock.now += 500.0
    health.stopping = True
    assert health.live().ok
    health.stopping = False
    health.retire(member)
    assert health.live().ok
    assert health.live().fresh == ()


def test_the_server_answers_503_naming_the_group() -> None:
    clock = Clock()
    health = _health(clock)
    health.membership("ota-workers")
    clock.now += 95.0
    health.group_limit_s = 90.0  # what OTA_LIVENESS_GROUP_LIMIT_S sets at start-up
    server = serve_health_and_metrics(0, "127.0.0.1", REGISTRY, health)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/livez"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert (refused.value.code, refused.value.read()) == (
            503,
            b"no group: ota-workers for 95 s\n",
        )
    finally:
        server.shutdown()
        server.server_close()
