"""The console's dry run links to its device lists, and the list pages name the devices
(scheduler/console/pages_dry_runs.py), on a live scheduler."""

from __future__ import annotations

import re
import uuid

from tests.integration.scheduler.sched_harness import READ_KEY, WRITE_KEY, Harness
from tests.integration.scheduler.test_sched_console_audit import log_in

LINK = re.compile(r'href="(/console/dry-runs/[0-9a-f]+)\?category=skipped"')


async def test_the_dry_run_preview_links_to_pages_that_name_the_devices(harness: Harness) -> None:
    run = uuid.uuid4().hex[:6]
    on_target, fresh = f"cdr-{run}-on", f"cdr-{run}-fresh"
    harness.report(on_target, fw="2.0")
    await harness.wait_device(on_target, fw_version="2.0")
    package = await harness.upload(b"console dry run")
    writer, csrf = await log_in(harness, WRITE_KEY)
    try:
        preview = await writer.post(
            "/console/tasks/new",
            data={
                "csrf": csrf,
                "action": "preview",
                "type": "firmware",
                "package_id": package["id"],
                "device_ids": f"{on_target} {fresh}",
            },
        )
        assert preview.status_code == 200, preview.text
        link = LINK.search(preview.text)
        assert link is not None, preview.text
    finally:
        await writer.aclose()
    reader, _ = await log_in(harness, READ_KEY)
    try:
        skipped = await reader.get(link[1], params={"category": "skipped"})
        assert skipped.status_code == 200, skipped.text
        table = skipped.text.split('id="dry-run-devices"')[1]
        assert on_target in table
        assert "already on target" in table
        assert fresh not in table
        targeted = await reader.get(link[1])
        table = targeted.text.split('id="dry-run-devices"')[1]
        assert table.index(on_target) < table.index(fresh)  # release order
        assert "never reported" in table
        gone = await reader.get("/console/dry-runs/0123abcd")
        assert gone.status_code == 404
        assert "unknown_dry_run" in gone.text
    finally:
        await reader.aclose()
