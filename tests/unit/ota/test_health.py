"""Liveness and readiness from heartbeats (ota/health.py): the rules on a hand-moved
clock, and the HTTP answers through the real server."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from ota.health import Health, serve_health_and_metrics, stale
from ota.metrics import REGISTRY


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    return Health(limit_s=30.0, clock=clock)


def test_fresh_beats_are_live_and_ready(health: Health, clock: Clock) -> None:
    loop, poll = health.beat("event-loop"), health.beat("kafka-poll g")
    loop()
    poll()
    clock.now += 30.0  # exactly the limit: still fresh
    assert health.live().ok
    assert health.ready().ok
    assert health.live().body() == b"ok\nfresh: event-loop\nfresh: kafka-poll g\n"


def test_a_beat_older_than_the_limit_is_named(health: Health, clock: Clock) -> None:
    loop, poll = health.beat("event-loop"), health.beat("kafka-poll g")
    loop()
    poll()
    clock.now += 20.0
    loop()  # the loop turns, the consumer does not
    clock.now += 10.5
    live = health.live()
    assert not live.ok
    assert live.reasons == ("stale: kafka-poll g",)
    assert live.body() == b"stale: kafka-poll g\n"
    assert health.ready().reasons == ("stale: kafka-poll g",)
    poll()
    assert health.live().ok


def test_a_beat_counts_from_its_first_stamp(health: Health, clock: Clock) -> None:
    beat = health.beat("kafka-poll g")
    clock.now += 3600.0  # waiting for Kafka before the first poll: not a hung loop
    assert health.live().ok
    assert health.ready().reasons == ("starting: kafka-poll g",)
    beat()
    assert health.ready().ok


def test_a_retired_beat_no_longer_counts(health: Health, clock: Clock) -> None:
    beat = health.beat("kafka-poll g")
    beat()
    clock.now += 60.0
    health.retire(beat)
    assert health.live().ok
    assert health.ready().ok


def test_holds_keep_it_unready_but_live(health: Health) -> None:
    release = health.hold("listening")
    assert health.live().ok
    assert health.ready().reasons == ("starting: listening",)
    release()
    assert health.ready().ok


def test_stopping_is_live_and_unready(health: Health, clock: Clock) -> None:
    health.beat("kafka-poll g")()
    clock.now += 60.0
    health.stopping = True  # the drain is bounded by the runtime
    assert health.live().ok
    assert health.ready().reasons == ("stopping",)


def test_stale_is_pure_and_sorted(health: Health) -> None:
    b, a = health.beat("b"), health.beat("a")
    b.last, a.last = 0.0, 1.0
    assert stale([b, a], now=100.0, limit_s=30.0) == ["a", "b"]
    assert stale([b, a], now=30.5, limit_s=30.0) == ["b"]


@pytest.fixture
def served(health: Health) -> Iterator[str]:
    server = serve_health_and_metrics(0, "127.0.0.1", REGISTRY, health)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers["Content-Type"], refused.read().decode()


def test_the_server_answers_livez_readyz_and_metrics(
    served: str, health: Health, clock: Clock
) -> None:
    beat = health.beat("event-loop")
    beat()
    assert _get(served + "/livez")[::2] == (200, "ok\nfresh: event-loop\n")
    clock.now += 31.0
    assert _get(served + "/livez")[::2] == (503, "stale: event-loop\n")
    assert _get(served + "/readyz?verbose")[::2] == (503, "stale: event-loop\n")
    status, content_type, _ = _get(served + "/metrics")
    assert (status, content_type.split(";")[0]) == (200, "text/plain")
