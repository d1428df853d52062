"""Pure batch handling of the scheduler's consumers: sorting a polled batch into what to
apply and what to dead-letter, grouping job events per task, reading registry facts."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from ota.records import (
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    JobEventRecord,
    PresenceRecord,
    TimeoutRecord,
    encode,
)
from scheduler.consumers import by_task, parse_inbox, parse_job_events
from scheduler.devices import observation


@dataclass(frozen=True)
class Polled:
    """The fields of a Kafka consumer record the handlers read."""

    value: bytes | None
    offset: int = 0
    topic: str = "t"
    partition: int = 0
    key: bytes | None = b"dev"


def job_event(device: str, task: str, to_state: str, version: int = 1) -> JobEventRecord:
    return JobEventRecord(
        device_id=device,
        task_id=task,
        attempt=1,
        job_version=version,
        from_state="QUEUED",
        to_state=to_state,
        at_ms=1,
    )


def test_inbox_batch_keeps_registry_records_in_order_and_dead_letters_the_bad() -> None:
    report = DeviceEventRecord(device_id="d1", event_type="version_report", paras={"fw": "1"})
    online = PresenceRecord(device_id="d2", online=True)
    records = [
        Polled(encode(report), offset=0),
        Polled(
            encode(
                DownloadRecord(
                    device_id="d1", package_sha256="a" * 64, phase=DownloadPhase.FINISHED
                )
            )
        ),
        Polled(b"not json", offset=2),
        Polled(encode(online), offset=3),
        Polled(encode(TimeoutRecord(device_id="d1", task_id="t", job_version=1))),
        Polled(None, offset=5),
    ]
    parsed = parse_inbox(records)
    assert parsed.items == [report, online]
    assert parsed.skipped == 2
    assert [(d.reason, d.origin) for d in parsed.dead] == [
        ("invalid_json", "t/0/2"),
        ("invalid_json", "t/0/5"),
    ]


def test_job_event_batch_dead_letters_other_kinds_and_unknown_states() -> None:
    good = job_event("d1", "t1", "DOWNLOADING")
    records = [
        Polled(encode(PresenceRecord(device_id="d1", online=True)), offset=0),
        Polled(encode(job_event("d1", "t1", "NAPPING")), offset=1),
        Polled(encode(good), offset=2),
    ]
    parsed = parse_job_events(records)
    assert parsed.items == [good]
    assert parsed.positions == ["0/2"]  # where the timeline's full history is read
    assert [(d.reason, d.origin) for d in parsed.dead] == [
        ("unknown_kind", "t/0/0"),
        ("bad_value", "t/0/1"),
    ]
    assert "NAPPING" in parsed.dead[1].message


@given(st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=50))
def test_by_task_splits_the_batch_keeping_each_tasks_log_order(tasks: list[str]) -> None:
    events = [job_event(f"d{i}", t, "QUEUED") for i, t in enumerate(tasks)]
    groups = by_task(events)
    assert sorted(i for positions in groups.values() for i in positions) == list(range(len(events)))
    for tid, positions in groups.items():
        assert positions == sorted(positions)
        assert all(events[i].task_id == tid for i in positions)


def test_observation_reads_what_the_registry_keeps() -> None:
    assert observation(PresenceRecord(device_id="d", online=False)) == ("", "", "0", "")
    version = DeviceEventRecord(
        device_id="d", event_type="version_report", paras={"fw_version": "2"}
    )
    assert observation(version) == ("2", "", "", "")
    # A report the workers refuse (sw_version is no string) tells the registry nothing either.
    bad = DeviceEventRecord(
        device_id="d", event_type="version_report", paras={"fw_version": "2", "sw_version": 3}
    )
    assert observation(bad) == ("", "", "", "")
    progress = DeviceEventRecord(
        device_id="d",
        event_type="upgrade_progress_report",
        paras={"result_code": 0, "version": "2.1"},
    )
    assert observation(progress) == ("", "", "", "2.1")
    other = DeviceEventRecord(device_id="d", event_type="heartbeat", paras={"fw_version": "9"})
    assert observation(other) == ("", "", "", "")
