"""Pure pieces of the worker's shell: the outbox framing and the key-hash partitioner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner import DefaultPartitioner

from ota.kafka_producer import KeyHashPartitioner
from workers.batch import Output
from workers.store import decode_outputs, encode_outputs


class Cluster:
    """The two questions a partitioner asks of kafka-python's cluster metadata."""

    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


outputs = st.lists(
    st.builds(Output, st.integers(0, 2), st.binary(max_size=40), st.binary(max_size=400))
)


@given(outputs)
def test_outbox_round_trips(records: list[Output]) -> None:
    assert decode_outputs(encode_outputs(records)) == records


@given(st.binary(min_size=1, max_size=64), st.integers(1, 64))
def test_partition_is_kafkas_default(key: bytes, partitions: int) -> None:
    cluster = Cluster(partitions)
    ours = KeyHashPartitioner()
    expected = DefaultPartitioner().partition("t", key, key, b"v", b"v", cluster)
    assert ours.partition("t", key, key, b"v", b"v", cluster) == expected
    assert ours.partition("t", key, key, b"v", b"v", cluster) == expected  # cached hash
