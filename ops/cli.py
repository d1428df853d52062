"""`ota`: the operator's command line for the scheduler's API.

    ota packages upload FILE --type firmware --version 2.0 [...]
    ota packages list
    ota devices list [--fw-version V] [--group G] [--tag T] [--online|--offline]
    ota devices show DEVICE
    ota devices history DEVICE [--limit N] [--cursor C]
    ota devices credentials register|rotate|disable|enable|delete|show DEVICE
    ota devices credentials import FILE [--output REPORT.csv]
    ota tasks create --type firmware --package ID (--devices a,b | --devices-file F |
                     --group G | --filter-...) [policy options] [--dry-run]
    ota tasks dry-run DRY_RUN_ID [--list targeted|skipped|conflict] [--all]
    ota tasks list|show|pause|resume|cancel|retry|rollback|watch ...

Tables for people, `--json` for scripts. The API address and key come from
--url/--key or OTA_API_URL/OTA_API_KEY. Exit codes: 0 ok, 1 the API refused (the
message says why), 2 bad usage or the scheduler cannot be reached.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from ops import cli_render as render
from ops.cli_policy import add_policy_options, policy_from_args
from ota import policy_specs as specs
from ota.clock import now_ms

MAX_INLINE_IDS = 30_000
UPLOAD_CHUNK = 1 << 20


class CliError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Api:
    def __init__(self, url: str, key: str, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the scheduler at {self.url}: {exc}", 2) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise CliError(explain(response.status_code, body, response.text))
        return body


def explain(status: int, body: Any, text: str) -> str:
    """One line saying what the API refused and why."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status}: {text[:300]}"
    hint = {
        401: " (set OTA_API_KEY or --key)",
        403: " (use a key with that scope)",
    }.get(status, "")
    where = f" [{error['field']}]" if error.get("field") else ""
    return f"{error.get('code')}{where}: {error.get('message')}{hint}"


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            yield chunk


def _emit(args: argparse.Namespace, out: TextIO, data: Any, human: Callable[[], str]) -> None:
    if args.json:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(human() + "\n")


# ------------------------------------------------------------------ packages


def packages_upload(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} is not a file", 2)
    params = {
        "type": args.type,
        "version": args.version,
        "file_name": args.file_name or path.name,
    }
    for name in ("product", "allowed_sources", "custom_info", "description"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(path.stat().st_size),
    }
    if args.signature_file:
        headers["X-OTA-Signature"] = base64.b64encode(
            Path(args.signature_file).read_bytes()
        ).decode()
    package = api.call(
        "POST", "/v1/packages", params=params, content=_file_chunks(path), headers=headers
    )
    _emit(
        args,
        out,
        package,
        lambda: (
            f"{'already stored' if package['deduplicated'] else 'uploaded'}: "
            f"{package['id']}  {package['type']} {package['version']}  {package['size']} bytes  "
            f"sha256 {package['sha256']}"
        ),
    )
    return 0


def packages_list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    page = api.call("GET", "/v1/packages", params={"limit": args.limit})
    cols = ["id", "type", "version", "product", "size", "allowed_sources", "signed", "key_id"]
    _emit(args, out, page, lambda: render.table(page["items"], cols))
    return 0


# ------------------------------------------------------------------ devices


def devices_list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    params: list[tuple[str, str | int]] = [("limit", args.limit)]
    params += [("fw_version", v) for v in args.fw_version or []]
    params += [("sw_version", v) for v in args.sw_version or []]
    params += [("group", v) for v in args.group or []]
    params += [("tag", v) for v in args.tag or []]
    if args.online is not None:
        params.append(("online", "true" if args.online else "false"))
    if args.cursor:
        params.append(("cursor", args.cursor))
    page = api.call("GET", "/v1/devices", params=params)
    rows = [
        {
            **d,
            "job": (d.get("current_job") or {}).get("state"),
            "last_seen": render.when(d.get("last_seen_ms")),
        }
        for d in page["items"]
    ]
    cols = ["device_id", "fw_version", "sw_version", "online", "last_seen", "groups", "tags", "job"]

    def human() -> str:
        more = f"\nmore: --cursor {page['next_cursor']}" if page.get("next_cursor") else ""
        return render.table(rows, cols) + more

    _emit(args, out, page, human)
    return 0


def devices_show(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    device = api.call("GET", f"/v1/devices/{args.device_id}")
    _emit(args, out, device, lambda: "\n".join(render.device_screen(device)))
    return 0


def devices_history(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    params: list[tuple[str, str | int]] = [("limit", args.limit)]
    if args.cursor:
        params.append(("cursor", args.cursor))
    page = api.call("GET", f"/v1/devices/{args.device_id}/history", params=params)
    rows = [
        {
            **e,
            "at": render.when(e.get("at_ms")),
            "task": str(e.get("task_id"))[:12],
            "move": f"{e.get('from')} -> {e.get('to')}",
            "cause": e.get("cause_message") or "",
        }
        for e in page["items"]
    ]
    cols = ["offset", "at", "task", "attempt", "move", "cause", "detail"]

    def human() -> str:
        more = f"\nmore: --cursor {page['next_cursor']}" if page.get("next_cursor") else ""
        return render.table(rows, cols) + more

    _emit(args, out, page, human)
    return 0


# ------------------------------------------------------------------ tasks


def build_task(args: argparse.Namespace, api: Api) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    ids = [d.strip() for d in (args.devices or "").split(",") if d.strip()]
    if args.devices_file:
        path = Path(args.devices_file)
        if not path.is_file():
            raise CliError(f"{path} is not a file", 2)
        ids += [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    if len(ids) > MAX_INLINE_IDS:
        listed = api.call("POST", "/v1/target-lists", content="\n".join(ids).encode())
        targets["list_id"] = listed["list_id"]
    elif ids:
        targets["device_ids"] = ids
    if args.group:
        targets["groups"] = args.group
    flt: dict[str, Any] = {}
    for name in ("fw_versions", "sw_versions", "groups", "tags"):
        values = getattr(args, f"filter_{name}")
        if values:
            flt[name] = values
    if args.filter_online is not None:
        flt["online"] = args.filter_online
    if flt:
        targets["filter"] = flt
    body: dict[str, Any] = {
        "type": args.type,
        "package_id": args.package,
        "targets": targets,
        "policy": policy_from_args(args, now_ms()),
    }
    if args.name:
        body["name"] = args.name
    if args.dry_run:
        body["dry_run"] = True
    return body


def tasks_create(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    result = api.call("POST", "/v1/tasks", json=build_task(args, api))
    if result.get("dry_run"):
        lasting = {"dry_run", "dry_run_id", "expires_in_s", "lists"}
        rows = [{"count": k, "devices": v} for k, v in result.items() if k not in lasting]
        _emit(
            args,
            out,
            result,
            lambda: (
                "dry run, nothing created:\n"
                + render.table(rows, ["count", "devices"])
                + f"\ndevice lists kept {result['expires_in_s']} s: ota tasks dry-run "
                + f"{result['dry_run_id']} --list targeted|skipped|conflict"
            ),
        )
    else:
        _emit(
            args,
            out,
            result,
            lambda: (
                f"created task {result['id']} ({result['status']}) for {result['devices']} devices"
            ),
        )
    return 0


def tasks_list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    page = api.call("GET", "/v1/tasks", params=params)
    rows = [{**t, "created": render.when(t.get("created_ms"))} for t in page["items"]]
    cols = ["id", "name", "type", "status", "devices", "created", "reason"]
    _emit(args, out, page, lambda: render.table(rows, cols))
    return 0


def audit_list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.cursor:
        params["cursor"] = args.cursor
    page = api.call("GET", "/v1/audit", params=params)
    rows = [
        {**e, "at": render.when(e.get("at_ms")), "target": " ".join(e["target"].values())}
        for e in page["items"]
    ]
    cols = ["at", "key_id", "action", "target", "status", "outcome", "result_id", "client"]

    def human() -> str:
        more = f"\nmore: --cursor {page['next_cursor']}" if page["next_cursor"] else ""
        return render.table(rows, cols) + more

    _emit(args, out, page, human)
    return 0


def tasks_show(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    task = api.call("GET", f"/v1/tasks/{args.task_id}")
    if args.devices_status is not None:
        params = (
            {"status": args.devices_status, "limit": args.limit}
            if args.devices_status
            else {"limit": args.limit}
        )
        page = api.call("GET", f"/v1/tasks/{args.task_id}/devices", params=params)
        cols = ["device_id", "status", "state", "attempt", "wave", "cause_message"]
        _emit(args, out, page, lambda: render.table(page["items"], cols))
        return 0
    _emit(args, out, task, lambda: "\n".join(render.task_screen(task)))
    return 0


def tasks_op(op: str) -> Callable[[Api, argparse.Namespace, TextIO], int]:
    def run(api: Api, args: argparse.Namespace, out: TextIO) -> int:
        result = api.call("POST", f"/v1/tasks/{args.task_id}/{op}")

        def human() -> str:
            task = result.get("task", result)
            line = f"task {task['id']}: {task['status']}"
            if op == "cancel":
                line += (
                    f"; never started: {result['not_started']}, cancel sent: {result['cancel_requested']}, "
                    f"left to finish (already installing): {result['left_to_finish']}"
                )
            if op == "retry":
                line += f"; retrying {result['retried']} devices"
            if op == "rollback":
                rollback = result["rollback_task"]
                line += (
                    "; rollback starts once its devices have finished"
                    if rollback is None
                    else f"; rollback task {rollback['id']}: {rollback['status']}, "
                    f"{rollback['devices']} devices"
                )
            return line

        _emit(args, out, result, human)
        return 0

    return run


def tasks_watch(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    drawn = 0
    tty = out.isatty() and not args.json
    while True:
        task = api.call("GET", f"/v1/tasks/{args.task_id}")
        if args.json:
            out.write(orjson.dumps(task).decode() + "\n")
        else:
            lines = render.task_screen(task)
            if tty and drawn:
                out.write(f"\x1b[{drawn}F")
            out.write("".join(("\x1b[2K" if tty else "") + line + "\n" for line in lines))
            drawn = len(lines)
        out.flush()
        if (
            task["status"] in render.FINISHED
            and (task.get("progress") or {}).get("percent") == 100.0
        ):
            return 0 if task["status"] == "Success" else 1
        if args.once:
            return 0
        time.sleep(args.interval)


# ------------------------------------------------------------------ parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ota",
        description="Operate OTA rollouts through the scheduler API.",
        epilog="Also: `ota up` runs the services (python -m ops.supervisor --help), "
        "`ota demo` runs a whole rollout on this machine (python -m ops.demo --help).",
    )
    p.add_argument(
        "--url", default=None, help="API base URL (OTA_API_URL, default http://127.0.0.1:8080)"
    )
    p.add_argument("--key", default=None, help="API key (OTA_API_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    groups = p.add_subparsers(dest="group", required=True)

    pk = groups.add_parser("packages", help="upload and list packages").add_subparsers(
        dest="cmd", required=True
    )
    up = pk.add_parser("upload", help="upload a package file (streamed)")
    up.add_argument("file")
    up.add_argument("--type", required=True, choices=["firmware", "software"])
    up.add_argument("--version", required=True)
    up.add_argument("--file-name")
    up.add_argument("--product")
    up.add_argument("--allowed-sources", help="comma-separated source versions (max 20)")
    up.add_argument("--custom-info")
    up.add_argument("--description")
    up.add_argument("--signature-file", help="raw detached signature (Ed25519 or ECDSA P-256)")
    up.set_defaults(run=packages_upload)
    ls = pk.add_parser("list")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(run=packages_list)

    dv = groups.add_parser("devices", help="list and inspect devices").add_subparsers(
        dest="cmd", required=True
    )
    dl = dv.add_parser("list")
    dl.add_argument("--fw-version", action="append")
    dl.add_argument("--sw-version", action="append")
    dl.add_argument("--group", action="append")
    dl.add_argument("--tag", action="append")
    online = dl.add_mutually_exclusive_group()
    online.add_argument("--online", dest="online", action="store_true", default=None)
    online.add_argument("--offline", dest="online", action="store_false")
    dl.add_argument("--limit", type=int, default=100)
    dl.add_argument("--cursor")
    dl.set_defaults(run=devices_list)
    ds = dv.add_parser("show", help="a device with its current job and timeline")
    ds.add_argument("device_id")
    ds.set_defaults(run=devices_show)
    dh = dv.add_parser("history", help="a device's job events read back from the log")
    dh.add_argument("device_id")
    dh.add_argument("--limit", type=int, default=100)
    dh.add_argument("--cursor")
    dh.set_defaults(run=devices_history)
    # Imported here: ops.cli_credentials builds on this module's Api and CliError.
    from ops import cli_credentials

    cli_credentials.add_parser(dv)

    tk = groups.add_parser("tasks", help="create and operate upgrade tasks").add_subparsers(
        dest="cmd", required=True
    )
    cr = tk.add_parser("create", help="create a task (or --dry-run to count)")
    cr.add_argument("--type", required=True, choices=["firmware", "software"])
    cr.add_argument("--package", required=True, help="package id")
    cr.add_argument("--name")
    cr.add_argument("--devices", help="comma-separated device ids")
    cr.add_argument("--devices-file", help="a file with one device id per line (any size)")
    cr.add_argument("--group", action="append", help="every device of a group (repeatable)")
    cr.add_argument("--filter-fw-versions", action="append", dest="filter_fw_versions")
    cr.add_argument("--filter-sw-versions", action="append", dest="filter_sw_versions")
    cr.add_argument("--filter-group", action="append", dest="filter_groups")
    cr.add_argument("--filter-tag", action="append", dest="filter_tags")
    fo = cr.add_mutually_exclusive_group()
    fo.add_argument("--filter-online", dest="filter_online", action="store_true", default=None)
    fo.add_argument("--filter-offline", dest="filter_online", action="store_false")
    add_policy_options(cr)
    cr.add_argument("--dry-run", action="store_true")
    cr.set_defaults(run=tasks_create)
    # Imported here: ops.cli_dry_run builds on this module's Api.
    from ops import cli_dry_run

    cli_dry_run.add_parser(tk)
    tl = tk.add_parser("list")
    tl.add_argument("--status")
    tl.add_argument("--limit", type=int, default=50)
    tl.set_defaults(run=tasks_list)
    sh = tk.add_parser("show", help="a task, or its devices with --devices [STATUS]")
    sh.add_argument("task_id")
    sh.add_argument("--devices", dest="devices_status", nargs="?", const="", default=None)
    sh.add_argument("--limit", type=int, default=100)
    sh.set_defaults(run=tasks_show)
    for op in ("pause", "resume", "cancel", "retry", "rollback"):
        o = tk.add_parser(op)
        o.add_argument("task_id")
        o.set_defaults(run=tasks_op(op))
    wt = tk.add_parser("watch", help="live progress bars until the task ends")
    wt.add_argument("task_id")
    wt.add_argument("--interval", type=float, default=2.0)
    wt.add_argument("--once", action="store_true", help="draw once and exit")
    wt.set_defaults(run=tasks_watch)
    au = groups.add_parser("audit", help="who changed what: the API's audit trail, newest first")
    au.add_argument("--limit", type=int, default=50)
    au.add_argument("--cursor", help="the cursor a previous page printed")
    au.set_defaults(run=audit_list)
    from ops import cli_keys  # builds on this module's Api, like ops.cli_credentials

    cli_keys.add_parser(groups)
    return p


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    out, err = out or sys.stdout, err or sys.stderr
    words = list(sys.argv[1:] if argv is None else argv)
    # Local commands that run processes rather than call the API.
    if words[:1] == ["up"]:
        from ops import supervisor

        return supervisor.main(words[1:])
    if words[:1] == ["demo"]:
        from ops import demo

        return demo.main(words[1:])
    args = parser().parse_args(argv)
    url = args.url or environ.get("OTA_API_URL") or "http://127.0.0.1:8080"
    key = args.key or environ.get("OTA_API_KEY", "")
    api = Api(url.rstrip("/"), key)
    try:
        code: int = args.run(api, args, out)
        return code
    except specs.SpecError as exc:
        err.write(f"ota: {exc}\n")
        return 2
    except CliError as exc:
        err.write(f"ota: {exc.message}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
    finally:
        api.http.close()


if __name__ == "__main__":
    sys.exit(main())
