"""`ota keys ...`: stored API keys (admin scope).

    ota keys create NAME --scopes read[,write][,admin]   # prints the key once
    ota keys list
    ota keys revoke KEY_ID

The key is printed once, on its own line last (`ota keys create ci --scopes write | tail -1`);
the platform keeps only its hash and cannot show it again.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import orjson

from ops import cli_render as render
from ops.cli import Api


def _emit(args: argparse.Namespace, out: TextIO, data: Any, human: str) -> None:
    out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if args.json else human)
    out.write("\n")


def create(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    made = api.call("POST", "/v1/keys", json={"name": args.name, "scopes": scopes})
    human = (
        f"key {made['id']} ({made['name']}): scopes {','.join(made['scopes'])}, "
        f"audit name {made['key_id']}\n"
        "the key, shown this once (keep it in a secret store):\n"
        f"{made['key']}"
    )
    _emit(args, out, made, human)
    return 0


def list_keys(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    page = api.call("GET", "/v1/keys")
    rows = [
        {**k, "scopes": ",".join(k["scopes"]), "created": render.when(k["created_ms"])}
        for k in page["items"]
    ]
    _emit(args, out, page, render.table(rows, ["id", "name", "scopes", "key_id", "created"]))
    return 0


def revoke(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    gone = api.call("DELETE", f"/v1/keys/{args.key_id}")
    _emit(args, out, gone, f"key {gone['id']} ({gone['name']}): revoked")
    return 0


def add_parser(groups: Any) -> None:
    """Add `keys` to the top-level subparsers."""
    ks = groups.add_parser("keys", help="stored API keys: create, list, revoke (admin scope)")
    sub = ks.add_subparsers(dest="cmd", required=True)
    cr = sub.add_parser("create", help="create a key; it is printed once")
    cr.add_argument("name", help="what the key is for (up to 64 characters)")
    cr.add_argument("--scopes", required=True, help="comma-separated: read, write, admin")
    cr.set_defaults(run=create)
    sub.add_parser("list", help="stored keys (never the keys themselves)").set_defaults(
        run=list_keys
    )
    rv = sub.add_parser("revoke", help="revoke a key: refused from the next request on")
    rv.add_argument("key_id")
    rv.set_defaults(run=revoke)
