"""The `ota` CLI against a live scheduler: every command, tables and --json, errors."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import orjson

from ops.cli import main
from tests.integration.scheduler.sched_harness import READ_KEY, WRITE_KEY, Harness


async def ota(harness: Harness, *argv: str, key: str = WRITE_KEY) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"OTA_API_URL": harness.base_url, "OTA_API_KEY": key}
    code = await asyncio.to_thread(main, list(argv), env, out, err)
    return code, out.getvalue(), err.getvalue()


async def ota_json(harness: Harness, *argv: str) -> Any:
    code, out, err = await ota(harness, "--json", *argv)
    assert code == 0, err
    return orjson.loads(out)


async def test_cli_end_to_end(harness: Harness, tmp_path: Path) -> None:
    firmware = tmp_path / "fw-2.0.bin"
    firmware.write_bytes(b"\x01" * 300_000)
    code, out, err = await ota(
        harness, "packages", "upload", str(firmware), "--type", "firmware", "--version", "2.0",
        "--allowed-sources", "1.0,1.1",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("uploaded: ")
    package_id = out.split()[1]
    code, out, _ = await ota(harness, "packages", "list")
    assert package_id in out
    assert out.splitlines()[0].split()[:3] == ["ID", "TYPE", "VERSION"]

    run = uuid.uuid4().hex[:6]
    devices = [f"cli-{run}-{i}" for i in range(4)]
    for d in devices:
        harness.report(d, fw="1.0")
    harness.report(devices[3], fw="2.0")
    await harness.wait_device(devices[3], fw_version="2.0")
    await harness.wait_device(devices[2], fw_version="1.0")
    code, out, _ = await ota(harness, "devices", "list", "--fw-version", "1.0")
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == devices[:3]

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(devices) + "\n")
    dry = await ota_json(
        harness, "tasks", "create", "--type", "firmware", "--package", package_id,
        "--devices-file", str(ids_file), "--dry-run",
    )  # fmt: skip
    assert dry["targeted"] == 4
    assert dry["already_on_target"] == 1
    code, out, _ = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", package_id,
        "--devices", ",".join(devices), "--wave", "2:50", "--abort", "90:4",
        "--retry-count", "2", "--timeout", "online_s=600", "--name", "cli rollout",
        "--max-in-flight", "3",
    )  # fmt: skip
    assert code == 0
    tid = out.split()[2]
    task = await ota_json(harness, "tasks", "show", tid)
    assert task["policy"]["waves"][0]["count"] == 2
    assert task["policy"]["max_in_flight"] == 3
    assert task["policy"]["timeouts"]["online_s"] == 600
    await harness.wait_releases(2)
    harness.job_event(devices[0], tid, "SUCCEEDED")
    harness.job_event(devices[1], tid, "FAILED", cause=22)
    await harness.wait_releases(4)
    harness.job_event(devices[2], tid, "SUCCEEDED")
    harness.job_event(devices[3], tid, "SUCCEEDED")
    await harness.wait_status(tid, "PartialSuccess")
    code, out, _ = await ota(harness, "tasks", "watch", tid, "--interval", "0.1")
    assert code == 1  # finished, not all succeeded
    assert "PartialSuccess" in out
    assert "Low battery" in out
    success = next(line for line in out.splitlines() if line.strip().startswith("Success"))
    assert "[" + "#" * 22 + "." * 8 + "]" in success  # 3 of 4 devices
    assert success.endswith(" 3")
    code, out, _ = await ota(harness, "tasks", "show", tid, "--devices", "Fail")
    assert devices[1] in out
    assert "Low battery" in out
    code, out, _ = await ota(harness, "tasks", "list", "--status", "PartialSuccess")
    assert tid in out
    code, out, _ = await ota(harness, "tasks", "retry", tid)
    assert code == 0
    assert "retrying 1 devices" in out
    code, out, _ = await ota(harness, "tasks", "pause", tid)
    assert "Paused" in out
    code, out, _ = await ota(harness, "tasks", "resume", tid)
    assert "Processing" in out
    code, out, _ = await ota(harness, "tasks", "cancel", tid)
    assert "Stopped" in out
    assert "never started" in out
    code, out, _ = await ota(harness, "devices", "show", devices[1])
    assert "timeline (newest first):" in out
    assert "Low battery" in out
    code, out, _ = await ota(harness, "devices", "history", devices[1])  # from the log
    assert code == 0
    header = ["OFFSET", "AT", "TASK", "ATTEMPT", "MOVE", "CAUSE", "DETAIL"]
    assert out.splitlines()[0].split() == header
    assert "QUEUED -> FAILED" in out
    assert "Low battery" in out


async def test_cli_errors_are_clear(harness: Harness, tmp_path: Path) -> None:
    code, _, err = await ota(harness, "tasks", "show", "nope")
    assert code == 1
    assert err.strip() == "ota: unknown_task: task 'nope' does not exist"
    code, _, err = await ota(harness, "tasks", "pause", "nope", key=READ_KEY)
    assert code == 1
    assert "lacks the write scope" in err
    code, _, err = await ota(harness, "packages", "list", key="")
    assert "OTA_API_KEY" in err
    code, _, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", "nope",
        "--devices", "a", "--wave", "ten",
    )  # fmt: skip
    assert code == 2
    assert "--wave 'ten'" in err
    code, _, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", "nope", "--devices", "a"
    )
    assert code == 1
    assert "unknown_package [package_id]" in err
    code, _, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", "nope", "--devices", "a",
        "--max-in-flight", "0",
    )  # fmt: skip
    assert code == 1
    assert "out_of_range [policy.max_in_flight]" in err
    assert "policy.max_in_flight=0 is out of range" in err
    code, _, err = await ota(harness, "packages", "upload", str(tmp_path / "missing.bin"),
                             "--type", "firmware", "--version", "1")  # fmt: skip
    assert code == 2
    assert "is not a file" in err
    out, errs = io.StringIO(), io.StringIO()
    env = {"OTA_API_URL": "http://127.0.0.1:9", "OTA_API_KEY": WRITE_KEY}
    code = await asyncio.to_thread(main, ["tasks", "list"], env, out, errs)
    assert code == 2
    assert "cannot reach the scheduler at http://127.0.0.1:9" in errs.getvalue()
