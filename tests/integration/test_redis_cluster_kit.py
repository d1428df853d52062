"""The private Redis Cluster the cluster variants of the integration tests run on."""

from __future__ import annotations

from redis.crc import key_slot

from tests.redis_cluster_kit import PrivateRedisCluster


def test_three_masters_serve_every_slot(redis_cluster: PrivateRedisCluster) -> None:
    client = redis_cluster.client()
    try:
        owners = {node.port for node in client.get_primaries()}
        assert owners == set(redis_cluster.ports)
        # Two keys on slots of different masters are both writable through the client.
        low, high = "a{0}", "b{3}"
        assert key_slot(low.encode()) != key_slot(high.encode())
        client.set(low, b"1")
        client.set(high, b"2")
        assert (client.get(low), client.get(high)) == (b"1", b"2")
        redis_cluster.flush()
        assert (client.get(low), client.get(high)) == (None, None)
    finally:
        client.close()
