"""deploy/topics.py: the topic table is the single source, and drift is found."""

from __future__ import annotations

import pytest

from tests import deploy_kit

topics = deploy_kit.load("topics")


def test_the_table_matches_the_code_and_every_generated_copy() -> None:
    table = topics.load()
    assert topics.drift(table) == []
    assert [t.name for t in table.topics][:2] == ["ota.inbox", "ota.commands"]


def test_an_edited_copy_is_drift() -> None:
    """drift() compares each file with what its renderer makes of it; an edit shows."""
    table = topics.load()
    for path, render in topics.generated(table).items():
        real = path.read_text()
        assert render(real) == real
        edited = real.replace("ota.devices", "ota.device", 1)
        assert edited != real, path
        assert render(edited) != edited, path


def test_each_kafka_config_follows_the_policy() -> None:
    for topic in topics.load().topics:
        config = topic.config()
        assert config["cleanup.policy"] == topic.cleanup_policy
        assert ("retention.ms" in config) == (topic.cleanup_policy == "delete")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "Bad_Name", "cleanup_policy": "delete", "retention_ms": 1}, "lower-case"),
        ({"name": "ota.x", "cleanup_policy": "delete"}, "retention_ms"),
        ({"name": "ota.x", "cleanup_policy": "compact", "retention_ms": 1}, "compacted"),
        ({"name": "ota.x", "cleanup_policy": "keep"}, "cleanup_policy"),
        ({"name": "ota.x", "cleanup_policy": "compact", "partitons": 3}, "unknown keys"),
    ],
)
def test_a_bad_entry_is_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        topics._topic(entry, 0)
