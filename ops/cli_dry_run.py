"""`ota tasks dry-run ...`: the device lists of a dry run (`ota tasks create ... --dry-run`).

    ota tasks dry-run DRY_RUN_ID                    the size of each list, time left
    ota tasks dry-run DRY_RUN_ID --list skipped [--limit 100] [--cursor C] [--all]

Lists: targeted (every device, release order, with its outcome), skipped (with the
reason) and conflict (the other task the device is busy with). One page by default,
with the cursor of the next; --all follows the cursors to the end.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import orjson

from ops import cli_render as render
from ops.cli import Api

COLUMNS = {
    "targeted": ["device_id", "outcome", "version"],
    "skipped": ["device_id", "reason", "version"],
    "conflict": ["device_id", "task_id", "state"],
}


def show(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    base = f"/v1/dry-runs/{args.dry_run_id}"
    if args.list is None:
        summary = api.call("GET", base)
        if args.json:
            out.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            rows = [{"list": k, "devices": v} for k, v in summary["lists"].items()]
            out.write(render.table(rows, ["list", "devices"]) + "\n")
            out.write(f"kept for {summary['expires_in_s']} s more\n")
        return 0
    items: list[dict[str, Any]] = []
    cursor = args.cursor
    while True:
        params: dict[str, Any] = {"category": args.list, "limit": args.limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.call("GET", f"{base}/devices", params=params)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None or not args.all:
            break
    if args.json:
        out.write(orjson.dumps({"items": items, "next_cursor": cursor}).decode() + "\n")
        return 0
    out.write(render.table(items, COLUMNS[args.list]) + "\n")
    if cursor is not None:
        out.write(f"more: --cursor {cursor}\n")
    return 0


def add_parser(tasks: Any) -> None:
    """Add `dry-run` under the `tasks` subparsers."""
    p = tasks.add_parser(
        "dry-run", help="the targeted, skipped and conflicting devices of a dry run"
    )
    p.add_argument("dry_run_id", help="the dry_run_id that tasks create --dry-run printed")
    p.add_argument("--list", choices=sorted(COLUMNS), help="page through one list")
    p.add_argument("--limit", type=int, default=100, help="devices per page (at most 1000)")
    p.add_argument("--cursor", help="the cursor a previous page printed")
    p.add_argument("--all", action="store_true", help="every page, to the end of the list")
    p.set_defaults(run=show)
