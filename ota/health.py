"""Liveness and readiness of one service process, as heartbeats its loops stamp.

A loop that must keep turning (the event loop, a Kafka consumer's poll loop) holds a
`Beat` and calls it once per turn; `Health.stale` names the beats older than the limit,
and the metrics server (`serve_health_and_metrics`) answers `GET /livez` 200 when there
are none, 503 naming them otherwise, so a hung loop or a stuck consumer gets the process
restarted while a metrics thread that still answers does not keep it "alive".

Rules, all in `Health` (pure: the clock is injected, nothing here does I/O but the
server at the bottom):
- a beat counts from its first stamp: a loop still starting (waiting for Kafka to answer
  before its first poll) is not stale; readiness waits for that first stamp instead;
- a retired beat (a consumer closed on purpose) no longer counts;
- once the service is stopping, liveness answers 200 (the runtime bounds the drain
  itself) and readiness 503;
- readiness: live, every beat stamped once, and every `hold` (a part still starting,
  e.g. the gateway's MQTT subscriptions) released.

The limit must exceed the longest step a loop legitimately blocks in (a poll's timeout,
1 s at most here; a batch's Redis round trips): OTA_LIVENESS_LIMIT_S, 30 s by default.

A consumer that keeps polling can still be out of its group (a join that never
completes, a member the coordinator dropped). Each group consumer also holds a
`membership` beat, stamped after a poll while it is a settled member and stamped once
when registered (a consumer that never joins counts from its start); liveness fails,
`no group: <group> for <s> s`, once it is older than OTA_LIVENESS_GROUP_LIMIT_S (120 s
by default: well above a rebalance and a short Kafka outage, so a Kafka restart does not
restart every pod). A consumer given partitions by hand has no group and no such beat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

DEFAULT_LIMIT_S = 30.0
DEFAULT_GROUP_LIMIT_S = 120.0
LOOP_BEAT_INTERVAL_S = 1.0  # how often the runtime's event-loop beat stamps


class Beat:
    """One loop's heartbeat: call it once per turn of the loop."""

    __slots__ = ("_clock", "last", "name")

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._clock = clock
        self.last: float | None = None  # None: not stamped yet

    def __call__(self) -> None:
        self.last = self._clock()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...]  # why not ok
    fresh: tuple[str, ...] = ()  # the beats that were checked and found fresh

    def body(self) -> bytes:
        """`ok` and the fresh beats (what was checked), or one line per reason."""
        if self.ok:
            return "".join(["ok\n", *(f"fresh: {name}\n" for name in self.fresh)]).encode()
        return "".join(f"{r}\n" for r in self.reasons).encode()


def stale(beats: Iterable[Beat], now: float, limit_s: float) -> list[str]:
    """The names of the stamped beats older than `limit_s` at `now`, sorted."""
    return sorted(b.name for b in beats if b.last is not None and now - b.last > limit_s)


def _fresh(beats: Iterable[Beat], late: list[str]) -> tuple[str, ...]:
    return tuple(sorted(b.name for b in beats if b.last is not None and b.name not in late))


class Health:
    """The beats and readiness holds of one process; thread-safe (stamped on loops and
    threads, read on the metrics server's threads)."""

    def __init__(
        self,
        limit_s: float = DEFAULT_LIMIT_S,
        clock: Callable[[], float] = time.monotonic,
        group_limit_s: float = DEFAULT_GROUP_LIMIT_S,
    ) -> None:
        self.limit_s = limit_s
        self.group_limit_s = group_limit_s
        self.clock = clock
        self.stopping = False
        self._beats: set[Beat] = set()
        self._groups: set[Beat] = set()  # membership beats, named by their group
        self._holds: set[str] = set()
        self._lock = threading.Lock()

    def beat(self, name: str) -> Beat:
        """Register a beat; it counts from its first stamp."""
        beat = Beat(name, self.clock)
        with self._lock:
            self._beats.add(beat)
        return beat

    def membership(self, group: str) -> Beat:
        """Register a group consumer's membership beat, stamp it while a member; it counts
        from now, so a consumer that never joins fails liveness too."""
        beat = Beat(group, self.clock)
        beat()
        with self._lock:
            self._groups.add(beat)
        return beat

    def retire(self, beat: Beat) -> None:
        with self._lock:
            self._beats.discard(beat)
            self._groups.discard(beat)

    def hold(self, name: str) -> Callable[[], None]:
        """Keep the process unready until the returned function is called."""
        with self._lock:
            self._holds.add(name)

        def release() -> None:
            with self._lock:
                self._holds.discard(name)

        return release

    def _snapshot(self) -> tuple[list[Beat], list[str]]:
        with self._lock:
            return list(self._beats), sorted(self._holds)

    def _groupless(self, now: float) -> tuple[list[str], list[str]]:
        """`no group: ...` reasons for the memberships older than the group limit, and
        the groups found fresh."""
        with self._lock:
            groups = sorted(self._groups, key=lambda b: b.name)
        late, fresh = [], []
        for beat in groups:
            age = now - (beat.last if beat.last is not None else now)
            if age > self.group_limit_s:
                late.append(f"no group: {beat.name} for {age:.0f} s")
            else:
                fresh.append(f"group {beat.name}")
        return late, fresh

    def live(self) -> Verdict:
        if self.stopping:
            return Verdict(True, ())
        beats, _ = self._snapshot()
        now = self.clock()
        late = stale(beats, now, self.limit_s)
        groupless, members = self._groupless(now)
        reasons = [f"stale: {name}" for name in late] + groupless
        return Verdict(not reasons, tuple(reasons), _fresh(beats, late) + tuple(members))

    def ready(self) -> Verdict:
        if self.stopping:
            return Verdict(False, ("stopping",))
        beats, holds = self._snapshot()
        now = self.clock()
        late = stale(beats, now, self.limit_s)
        groupless, members = self._groupless(now)
        reasons = [f"stale: {n}" for n in late] + groupless
        reasons += sorted(f"starting: {b.name}" for b in beats if b.last is None)
        reasons += [f"starting: {h}" for h in holds]
        return Verdict(not reasons, tuple(reasons), _fresh(beats, late) + tuple(members))


# The process's one Health, like the metrics registry: Kafka consumers made anywhere in
# the process register their poll beat here (ota/kafka_clients.py).
HEALTH = Health()


def serve_health_and_metrics(
    port: int, host: str, registry: CollectorRegistry, health: Health
) -> ThreadingHTTPServer:
    """Serve /livez, /readyz and /metrics (any other path) on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/livez", "/readyz"):
                verdict = health.live() if path == "/livez" else health.ready()
                self._send(200 if verdict.ok else 503, "text/plain; charset=utf-8", verdict.body())
            else:
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes and scrapes every few seconds: not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
