"""`ota devices credentials ...`: register, rotate, disable, enable, delete, show, import.

    ota devices credentials register DEVICE [--secret-file F]   # prints a generated secret once
    ota devices credentials register DEVICE --auth certificate  # client certificate, no secret
    ota devices credentials auth DEVICE secret|certificate|any
    ota devices credentials rotate DEVICE [--secret-file F]
    ota devices credentials disable|enable|delete|show DEVICE
    ota devices credentials import FILE [--output REPORT.csv]

Every command but `show` changes who may connect and needs an admin key (OTA_API_KEY or
--key); `show` needs read. A secret is never taken on the command line (shell history,
process lists): give it in a file (`-` for stdin) or let the platform generate one. The
import streams FILE up and the CSV report (generated secrets, refused lines) down; exit 1
when a line was refused.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from ops import cli_render as render
from ops.cli import UPLOAD_CHUNK, Api, CliError, explain

SUMMARY = re.compile(rb"# registered (\d+), generated (\d+), refused (\d+)")


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            yield chunk


def _path(device_id: str) -> str:
    return f"/v1/devices/{device_id}/credentials"


def _secret(args: argparse.Namespace) -> dict[str, str]:
    if not args.secret_file:
        return {}
    if args.secret_file == "-":
        return {"secret": sys.stdin.readline().strip()}
    try:
        return {"secret": Path(args.secret_file).read_text().strip()}
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the secret from {args.secret_file}: {exc}", 2) from None


def _human(status: dict[str, Any], verb: str) -> str:
    state = "enabled" if status["enabled"] else "DISABLED"
    line = (
        f"{status['device_id']}: {verb}, {state}, auth {status.get('auth', 'secret')}, "
        f"key {status['key_id'] or '-'}, "
        f"created {render.when(status['created_ms'])}, "
        f"rotated {render.when(status.get('rotated_ms'))}"
    )
    if "secret" in status:
        line += f"\nsecret (shown once, store it now): {status['secret']}"
    return line


def _emit(args: argparse.Namespace, out: TextIO, status: dict[str, Any], verb: str) -> None:
    if args.json:
        out.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write(_human(status, verb) + "\n")


def register(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    method = getattr(args, "auth", "secret")
    if method == "certificate":
        if args.secret_file:
            raise CliError("--auth certificate takes no secret", 2)
        status = api.call("POST", f"{_path(args.device_id)}/certificate")
    else:
        status = api.call("POST", _path(args.device_id), json=_secret(args))
        if method == "any":
            status = {
                **status,
                **api.call("POST", f"{_path(args.device_id)}/auth", json={"auth": "any"}),
            }
    _emit(args, out, status, "registered")
    return 0


def auth(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    status = api.call("POST", f"{_path(args.device_id)}/auth", json={"auth": args.method})
    _emit(args, out, status, f"authenticates with {args.method}")
    return 0


def rotate(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    status = api.call("POST", f"{_path(args.device_id)}/rotate", json=_secret(args))
    _emit(args, out, status, "rotated")
    return 0


def disable(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _emit(args, out, api.call("POST", f"{_path(args.device_id)}/disable"), "disabled")
    return 0


def enable(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _emit(args, out, api.call("POST", f"{_path(args.device_id)}/enable"), "enabled")
    return 0


def delete(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    api.call("DELETE", _path(args.device_id))
    out.write(("{}" if args.json else f"{args.device_id}: credentials deleted") + "\n")
    return 0


def show(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    _emit(args, out, api.call("GET", _path(args.device_id)), "registered")
    return 0


def import_file(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} is not a file", 2)
    if args.json and not args.output:
        raise CliError("--json prints the summary: give --output for the CSV report", 2)
    # The report holds secrets: a file only its owner can read.
    report = (
        os.fdopen(os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        if args.output
        else None
    )
    last = b""
    try:
        with api.http.stream(
            "POST",
            "/v1/credentials/import",
            content=_chunks(path),
            headers={"Content-Type": "text/plain"},
        ) as response:
            if response.status_code != 200:
                text = response.read().decode(errors="replace")
                try:
                    body = orjson.loads(text)
                except orjson.JSONDecodeError:
                    body = None
                raise CliError(explain(response.status_code, body, text))
            for chunk in response.iter_bytes():
                if report is not None:
                    report.write(chunk)
                else:
                    out.write(chunk.decode())
                last = (last + chunk)[-512:]
    except httpx.HTTPError as exc:
        raise CliError(f"the import was cut off: {exc}", 2) from None
    finally:
        if report is not None:
            report.close()
    match = SUMMARY.search(last)
    if match is None:
        tail = last.rstrip().rsplit(b"\n", 1)[-1].decode(errors="replace")
        raise CliError(f"the import did not finish: {tail}")
    registered, generated, refused = (int(g) for g in match.groups())
    if args.json:
        summary = {"registered": registered, "generated": generated, "refused": refused}
        out.write(orjson.dumps(summary).decode() + "\n")
    elif report is not None:
        out.write(match.group(0).decode().lstrip("# ") + f"; report in {args.output}\n")
    if refused:
        raise CliError(f"{refused} lines refused (see the report)")
    return 0


def add_parser(devices: Any) -> None:
    """Add `credentials` under the `devices` subparsers."""
    cr = devices.add_parser(
        "credentials", help="device secrets the broker checks (IoTDA HMAC; changes: admin scope)"
    ).add_subparsers(dest="action", required=True)
    for name, run, what in (
        ("register", register, "register a device's secret (generated unless --secret-file)"),
        ("rotate", rotate, "replace a device's secret (generated unless --secret-file)"),
    ):
        p = cr.add_parser(name, help=what)
        p.add_argument("device_id")
        p.add_argument("--secret-file", help="a file holding the secret ('-': stdin)")
        if name == "register":
            p.add_argument(
                "--auth",
                choices=("secret", "certificate", "any"),
                default="secret",
                help="how the device proves itself (certificate: from a device CA, no secret)",
            )
        p.set_defaults(run=run)
    au = cr.add_parser("auth", help="choose secret, certificate or any (closes live connections)")
    au.add_argument("device_id")
    au.add_argument("method", choices=("secret", "certificate", "any"))
    au.set_defaults(run=auth)
    for name, run, what in (
        ("disable", disable, "refuse the device's connections"),
        ("enable", enable, "accept the device's connections again"),
        ("delete", delete, "delete the device's credentials"),
        ("show", show, "the credential status (never the secret)"),
    ):
        p = cr.add_parser(name, help=what)
        p.add_argument("device_id")
        p.set_defaults(run=run)
    im = cr.add_parser("import", help="bulk import: lines device_id[,secret] (streamed)")
    im.add_argument("file")
    im.add_argument("--output", help="write the CSV report here (mode 0600) instead of stdout")
    im.set_defaults(run=import_file)
    # Imported here, as this module is by ops.cli: both build on its Api and CliError.
    from ops import cli_device_cas

    cli_device_cas.add_parser(devices)
