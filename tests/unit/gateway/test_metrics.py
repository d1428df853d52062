"""The gateway's own histogram exposes what prometheus_client's Histogram does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.metrics import LoopHistogram
from ota.metrics import LATENCY_BUCKETS_S

NAME = "ota_gateway_test_latency_seconds"


def _exposed(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]  # ours has no _created sample


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0.0, max_value=100.0),
            st.sampled_from([0.0, *LATENCY_BUCKETS_S]),  # on a bound: counted in its bucket
        ),
        max_size=40,
    )
)
def test_loop_histogram_exposes_as_a_prometheus_histogram(amounts: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = LoopHistogram(NAME, "latency", ours)
    reference = Histogram(NAME, "latency", registry=theirs, buckets=LATENCY_BUCKETS_S)
    for amount in amounts:
        histogram.observe(amount)
        reference.observe(amount)
    assert _exposed(ours) == _exposed(theirs)
