"""The edge fills its cache from an S3-compatible bucket (moto's server, tests/s3_kit.py)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ota.object_store import ObjectStore, ObjectStoreSettings, package_key
from tests.s3_kit import running_s3

from .edge_support import EdgeFactory, get


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[ObjectStoreSettings]:
    with running_s3(tmp_path) as settings:
        yield settings


@pytest.fixture
def store(bucket: ObjectStoreSettings) -> Iterator[ObjectStore]:
    client = ObjectStore(bucket)
    yield client
    client.close()


def _put(store: ObjectStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.NamedTemporaryFile() as handle:
        handle.write(data)
        handle.flush()
        store.put_file(package_key(sha), Path(handle.name), sha)
    return sha


def test_a_miss_fills_from_the_bucket_once_then_ranges_come_from_the_cache(
    edge_factory: EdgeFactory,
    bucket: ObjectStoreSettings,
    store: ObjectStore,
    token_for: Callable[..., str],
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    sha = _put(store, data)
    edge = edge_factory(origin_store=bucket)
    auth = {"Authorization": f"Bearer {token_for(sha)}"}
    reply, body = get(edge, f"/packages/sha256/{sha}", {**auth, "Range": "bytes=1000-2999"})
    assert reply.status == 206
    assert body == data[1000:3000]
    assert (edge.settings.cache_dir / "sha256" / sha).read_bytes() == data
    # Gone from the bucket: the next range can only come from the edge's own cache.
    store.delete(package_key(sha))
    assert store.size(package_key(sha)) is None
    reply, body = get(edge, f"/packages/sha256/{sha}", {**auth, "Range": "bytes=-100"})
    assert reply.status == 206
    assert body == data[-100:]


def test_a_package_the_bucket_lacks_is_a_404(
    edge_factory: EdgeFactory, bucket: ObjectStoreSettings, token_for: Callable[..., str]
) -> None:
    absent = "a" * 64
    edge = edge_factory(origin_store=bucket)
    reply, _ = get(
        edge, f"/packages/sha256/{absent}", {"Authorization": f"Bearer {token_for(absent)}"}
    )
    assert reply.status == 404
    assert list((edge.settings.cache_dir / "tmp").iterdir()) == []


def test_the_client_reads_a_byte_range_and_the_size(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    sha = _put(store, data)
    assert store.size(package_key(sha)) == len(data)
    with tempfile.TemporaryFile() as sink:
        seen = store.read_into(package_key(sha), sink, 10, 19)
        sink.seek(0)
        assert sink.read() == data[10:20]
    assert seen == hashlib.sha256(data[10:20]).hexdigest()
