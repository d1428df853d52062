"""`ota devices credentials ...` against a live scheduler."""

from __future__ import annotations

import asyncio
import csv
import io
import stat
import uuid
from pathlib import Path

import orjson

from ops.cli import main
from tests.integration.scheduler.sched_harness import ADMIN_KEY, READ_KEY, WRITE_KEY, Harness


async def ota(harness: Harness, *argv: str, key: str = ADMIN_KEY) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"OTA_API_URL": harness.base_url, "OTA_API_KEY": key}
    code = await asyncio.to_thread(main, list(argv), env, out, err)
    return code, out.getvalue(), err.getvalue()


async def test_credentials_commands(harness: Harness, tmp_path: Path) -> None:
    d = f"cli_{uuid.uuid4().hex[:8]}"
    code, out, err = await ota(harness, "devices", "credentials", "register", d, key=WRITE_KEY)
    assert code == 1
    assert "lacks the admin scope" in err, err  # letting a device in is an admin decision
    assert out == ""
    code, out, err = await ota(harness, "devices", "credentials", "register", d)
    assert code == 0, err
    assert f"{d}: registered, enabled" in out
    secret = out.split("store it now): ")[1].strip()
    assert len(secret) == 32

    code, out, _ = await ota(harness, "--json", "devices", "credentials", "show", d)
    shown = orjson.loads(out)
    assert shown["enabled"] is True
    assert "secret" not in shown

    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("rotated-secret-01\n")
    code, out, err = await ota(
        harness, "devices", "credentials", "rotate", d, "--secret-file", str(secret_file)
    )
    assert code == 0, err
    assert "shown once" not in out  # a given secret is not printed

    code, out, _ = await ota(harness, "devices", "credentials", "disable", d)
    assert "DISABLED" in out
    code, out, _ = await ota(harness, "devices", "credentials", "enable", d)
    assert ": enabled, enabled" in out
    code, _, err = await ota(harness, "devices", "credentials", "delete", d, key=READ_KEY)
    assert code == 1
    assert "forbidden" in err
    code, out, _ = await ota(harness, "devices", "credentials", "delete", d)
    assert code == 0
    code, _, err = await ota(harness, "devices", "credentials", "show", d)
    assert code == 1
    assert "unknown_credentials" in err
    code, _, err = await ota(
        harness, "devices", "credentials", "register", d, "--secret-file", "/nope"
    )
    assert code == 2
    assert "cannot read the secret" in err


async def test_credentials_import(harness: Harness, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    source = tmp_path / "fleet.csv"
    source.write_text(f"imp_{run}_1,secret-000001\nimp_{run}_2\n")
    report = tmp_path / "report.csv"
    code, out, err = await ota(
        harness, "devices", "credentials", "import", str(source), "--output", str(report)
    )
    assert code == 0, err
    assert out == f"registered 2, generated 1, refused 0; report in {report}\n"
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    rows = list(csv.reader(report.read_text().splitlines()[1:-1]))
    assert [(r[0], r[1]) for r in rows] == [("2", f"imp_{run}_2")]

    # Again: both are refused as already registered, and the exit status says so.
    code, out, err = await ota(harness, "--json", "devices", "credentials", "import", str(source),
                               "--output", str(report))  # fmt: skip
    assert code == 1
    assert orjson.loads(out) == {"registered": 0, "generated": 0, "refused": 2}
    assert "2 lines refused" in err
    code, out, _ = await ota(harness, "devices", "credentials", "import", str(source))
    assert out.splitlines()[0] == "line,device_id,secret,error"
    assert "already_registered" in out
