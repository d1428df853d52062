"""Pure parts of the edge: routing, tokens to statuses, plans, intervals, rate buckets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from download_edge import intervals, request, responses
from download_edge import metrics as m
from download_edge.auth import Authorizer, DeniedError
from download_edge.ratelimit import Bucket, DeviceLimiter
from download_edge.responses import FileSpan
from download_edge.settings import EdgeSettings
from ota.metrics import LATENCY_BUCKETS_S
from ota.settings import SettingsError, TokenKeys
from ota.tokens import mint

SHA = "ab" * 32
KEYS = TokenKeys.parse("k1:0123456789abcdef0123", None)
NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/packages/sha256/{SHA}".encode(), SHA),
        (f"/packages/sha256/{SHA.upper()}".encode(), None),
        (f"/packages/sha256/{SHA}/".encode(), None),
        (f"/packages/sha256/{SHA[:-1]}".encode(), None),
        (f"/packages/sha256/{SHA[:-2]}..".encode(), None),
        (b"/packages/sha256/", None),
        (b"/etc/passwd", None),
    ],
)
def test_package_of(path: bytes, expected: str | None) -> None:
    assert request.package_of(path) == expected


def test_token_sources() -> None:
    assert request.token_of("Bearer abc", b"") == "abc"
    assert request.token_of("bearer  abc ", b"token=zzz") == "abc"
    assert request.token_of(None, b"a=1&token=t%2Bx") == "t+x"
    assert request.token_of("Basic Zm9v", b"") is None
    assert request.token_of("Bearer ", b"") is None
    assert request.token_of(None, b"\xff=1") is None
    assert request.token_of(None, b"") is None


def test_authorizer_statuses() -> None:
    auth = Authorizer(KEYS, cache_size=2)
    token = mint(KEYS, device_id="d1", package_sha256=SHA, expires_s=NOW + 10)
    assert auth.device_for(token, SHA, NOW) == "d1"
    assert auth.device_for(token, SHA, NOW + 5) == "d1"  # remembered
    cases = [
        (None, SHA, NOW, 401),
        ("junk", SHA, NOW, 403),
        (token, "cd" * 32, NOW, 403),
        (token, SHA, NOW + 10, 410),
    ]
    for tok, sha, now, status in cases:
        with pytest.raises(DeniedError) as denied:
            auth.device_for(tok, sha, now)
        assert denied.value.status == status


def _plan(
    range_header: str | None, if_range: str | None = None, method: str = "GET"
) -> responses.Plan:
    return responses.for_package(
        method=method,
        package_sha256=SHA,
        size=1000,
        range_header=range_header,
        if_range=if_range,
        keep_alive=True,
        now_s=NOW,
        boundary="B",
    )


def test_plans() -> None:
    whole = _plan(None)
    assert (whole.status, whole.body, whole.has_file) == (200, (FileSpan(0, 1000),), True)
    assert b"Content-Length: 1000\r\n" in whole.head
    assert whole.head.endswith(b"Connection: keep-alive\r\n\r\n")
    part = _plan("bytes=10-19")
    assert (part.status, part.body, part.first_offset) == (206, (FileSpan(10, 10),), 10)
    assert b"Content-Range: bytes 10-19/1000\r\n" in part.head
    assert _plan("bytes=10-19", if_range='"other"').status == 200
    assert _plan("bytes=10-19", method="HEAD").body == ()
    assert _plan("bytes=x").status == 400
    unsatisfiable = _plan("bytes=1000-")
    assert unsatisfiable.status == 416
    assert b"Content-Range: bytes */1000\r\n" in unsatisfiable.head
    multi = _plan("bytes=0-0,500-500")
    assert (multi.status, multi.has_file, multi.first_offset) == (206, True, 0)
    assert b"multipart/byteranges; boundary=B" in multi.head
    length = sum(p.count if isinstance(p, FileSpan) else len(p) for p in multi.body)
    assert f"Content-Length: {length}\r\n".encode() in multi.head
    assert [p for p in multi.body if isinstance(p, FileSpan)] == [FileSpan(0, 1), FileSpan(500, 1)]


def test_error_plan_for_head_has_no_body() -> None:
    plan = responses.error(404, "nope", keep_alive=False, now_s=NOW, with_body=False)
    assert plan.body == ()
    assert b"Content-Length: 5\r\n" in plan.head
    assert plan.head.endswith(b"Connection: close\r\n\r\n")


spans = st.lists(
    st.tuples(st.integers(0, 500), st.integers(0, 100)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=20,
)


@given(spans, spans)
def test_merge_is_the_union(first: list[tuple[int, int]], second: list[tuple[int, int]]) -> None:
    merged = intervals.merge(intervals.merge([], first), second)
    covered = {n for s, e in first + second for n in range(s, e)}
    assert {n for s, e in merged for n in range(s, e)} == covered
    assert all(a[1] < b[0] for a, b in itertools.pairwise(merged))


def test_bucket() -> None:
    bucket = Bucket(1000, now=0.0)
    assert bucket.take(600, 0.0) == 600
    assert bucket.take(600, 0.0) == 400
    assert bucket.take(600, 0.0) == 0
    assert bucket.wait_s() == pytest.approx(1.0)
    assert bucket.take(600, 0.5) == 500
    bucket.refund(100)
    assert bucket.take(10_000, 100.0) == 1000  # never more than a second's worth
    limiter = DeviceLimiter(1000)
    assert limiter.bucket("d", 0.0) is limiter.bucket("d", 1.0)
    limiter.forget_idle(100.0, 60.0)
    assert limiter.bucket("d", 100.0).take(5000, 100.0) == 1000


def test_settings_from_env() -> None:
    settings = EdgeSettings.from_env(
        {
            "OTA_EDGE_PORT": "9443",
            "OTA_EDGE_PROCESSES": "2",
            "OTA_EDGE_TLS_CERT": "/etc/edge.pem",
            "OTA_EDGE_TLS_KEY": "/etc/edge.key",
            "OTA_EDGE_ORIGIN_URL": "https://store.example/packages/",
            "OTA_EDGE_EVENTS": "false",
        }
    )
    assert (settings.port, settings.processes, settings.tls, settings.events) == (
        9443,
        2,
        True,
        False,
    )
    assert settings.origin_url == "https://store.example/packages"
    for bad in (
        {"OTA_EDGE_TLS_CERT": "/etc/edge.pem"},
        {"OTA_EDGE_ORIGIN_URL": "ftp://store"},
        {"OTA_EDGE_PORT": "70000"},
        {"OTA_EDGE_TLS_BUFFER_BYTES": "100"},
    ):
        with pytest.raises(SettingsError):
            EdgeSettings.from_env(bad)


@given(
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=1, max_value=2**41),
)
def test_range_head_is_the_planned_head(first: int, length: int, size: int) -> None:
    """The small-range shortcut's head, byte for byte what `for_package` plans."""
    if first >= size:
        return
    last = min(first + length, size - 1)
    plan = responses.for_package(
        method="GET",
        package_sha256=SHA,
        size=size,
        range_header=f"bytes={first}-{last}",
        if_range=None,
        keep_alive=True,
        now_s=NOW,
    )
    assert responses.range_head(SHA, first, last, size, NOW) == plan.head


def test_tallied_first_bytes_expose_as_observed() -> None:
    """The batched time-to-first-byte histogram equals one fed by observe()."""
    registry = CollectorRegistry()
    observed = Histogram("observed", "", registry=registry, buckets=LATENCY_BUCKETS_S)
    tallied = Histogram("tallied", "", registry=registry, buckets=LATENCY_BUCKETS_S)
    values = [0.0, 1e-6, *LATENCY_BUCKETS_S, *(b * 1.01 for b in LATENCY_BUCKETS_S), 1e9]
    tally = m.Tally()
    for value in values:
        observed.observe(value)
        tally.first_byte(value)
    original, m.ttfb = m.ttfb, tallied
    try:
        tally.flush()
    finally:
        m.ttfb = original
    exposed = generate_latest(registry).decode()
    lines = {
        line.split(" ")[0]: line.split(" ")[1] for line in exposed.splitlines() if line[0] != "#"
    }
    for name, value in lines.items():
        if name.startswith("observed_") and not name.startswith("observed_created"):
            assert lines[name.replace("observed", "tallied", 1)] == value, name
