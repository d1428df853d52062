"""OTA_PACKAGE_STORE=s3: uploads land in the bucket, deletes remove them, a failing store
records nothing (moto's server as the bucket, tests/s3_kit.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ota.object_store import ObjectStore, ObjectStoreSettings, package_key
from tests.integration.scheduler.conftest import StartHarness
from tests.s3_kit import env_of, running_s3

FW = {"type": "firmware", "version": "3.0", "file_name": "fw.bin"}


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[ObjectStoreSettings]:
    with running_s3(tmp_path) as settings:
        yield settings


async def test_upload_lands_in_the_bucket_and_delete_removes_it(
    start_harness: StartHarness, bucket: ObjectStoreSettings
) -> None:
    harness = await start_harness(**env_of(bucket))
    content = b"\x7fELF" + bytes(range(256)) * 5000
    sha = hashlib.sha256(content).hexdigest()
    first = await harness.client.post("/v1/packages", params=FW, content=content)
    assert first.status_code == 201, first.text
    again = await harness.client.post(
        "/v1/packages", params={**FW, "version": "3.1"}, content=content
    )
    assert again.status_code == 201, again.text
    store = ObjectStore(bucket)
    try:
        assert store.size(package_key(sha)) == len(content)
        # Nothing kept on the scheduler's disk: the spool is empty, the origin route has none.
        assert not (harness.settings.package_dir / "sha256").exists()
        assert list((harness.settings.package_dir / "tmp").iterdir()) == []
        origin = await harness.client.get(f"/v1/origin/sha256/{sha}")
        assert origin.status_code == 404
        # Two packages share the content: it stays until the last one is deleted.
        deleted = await harness.client.delete(f"/v1/packages/{first.json()['id']}")
        assert deleted.status_code == 204
        assert store.size(package_key(sha)) == len(content)
        deleted = await harness.client.delete(f"/v1/packages/{again.json()['id']}")
        assert deleted.status_code == 204
        assert store.size(package_key(sha)) is None
    finally:
        store.close()


async def test_a_store_that_refuses_the_upload_is_a_503_and_records_nothing(
    start_harness: StartHarness, bucket: ObjectStoreSettings
) -> None:
    absent = dataclasses.replace(bucket, bucket="no-such-bucket")
    harness = await start_harness(**env_of(absent))
    response = await harness.client.post("/v1/packages", params=FW, content=b"payload")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert (await harness.client.get("/v1/packages")).json()["items"] == []
    assert list((harness.settings.package_dir / "tmp").iterdir()) == []
