"""`ota devices cas ...`: the device CAs whose client certificates the broker accepts.

    ota devices cas add CA.pem        # one PEM CA certificate (never its key)
    ota devices cas list
    ota devices cas delete FINGERPRINT

`add` and `delete` need an admin key, `list` a read key. Devices authenticate with these
CAs' certificates once registered for it:
`ota devices credentials register DEVICE --auth certificate` (or `auth DEVICE any`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

import orjson

from ops import cli_render as render
from ops.cli import Api, CliError


def _line(ca: dict[str, Any]) -> str:
    return (
        f"{ca['fingerprint']}  {ca['subject']}  valid {render.when(ca['not_before_ms'])} "
        f"to {render.when(ca['not_after_ms'])}"
    )


def add(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    try:
        pem = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc}", 2) from None
    ca = api.call("POST", "/v1/device-cas", content=pem, headers={"Content-Type": "text/plain"})
    out.write((orjson.dumps(ca).decode() if args.json else f"registered {_line(ca)}") + "\n")
    return 0


def list_cas(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    cas = api.call("GET", "/v1/device-cas")["device_cas"]
    if args.json:
        out.write(orjson.dumps(cas, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.write("".join(_line(ca) + "\n" for ca in cas) or "no device CA registered\n")
    return 0


def delete(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    api.call("DELETE", f"/v1/device-cas/{args.fingerprint}")
    out.write(("{}" if args.json else f"device CA {args.fingerprint} removed") + "\n")
    return 0


def add_parser(devices: Any) -> None:
    """Add `cas` under the `devices` subparsers."""
    cas = devices.add_parser(
        "cas", help="device CAs: client certificates they issue authenticate devices (admin)"
    ).add_subparsers(dest="action", required=True)
    a = cas.add_parser("add", help="register a CA certificate (PEM file)")
    a.add_argument("file")
    a.set_defaults(run=add)
    cas.add_parser("list", help="the registered device CAs").set_defaults(run=list_cas)
    d = cas.add_parser("delete", help="remove a device CA by its SHA-256 fingerprint")
    d.add_argument("fingerprint")
    d.set_defaults(run=delete)
