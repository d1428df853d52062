"""The policy options of `ota tasks create`, made from the policy's one definition.

`scheduler.policy_schema.POLICY` declares every policy field once; each field with an
`Option` becomes one command-line option here (its flag, its help from the field's
doc, an integer, a choice, a switch, or a compact syntax of `ota.policy_specs`), and
`policy_from_args` reads the policy JSON back from the parsed options. The scheduler
judges the result when the task is created, as it does for any API client.
"""

from __future__ import annotations

import argparse
from typing import Any

from scheduler.policy_schema import Field, options


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    for spec in options():
        option = spec.option
        assert option is not None
        help_text = "; ".join(part for part in (spec.doc, option.hint) if part)
        common: dict[str, Any] = {"dest": spec.name, "help": help_text.replace("%", "%%")}
        if spec.type == "boolean":
            parser.add_argument(option.flag, action="store_true", **common)
        elif option.parse is not None:
            action = "append" if option.repeat else "store"
            parser.add_argument(option.flag, metavar=option.metavar, action=action, **common)
        elif spec.choices:
            parser.add_argument(option.flag, choices=list(spec.choices), **common)
        elif spec.type == "integer":
            low, high = spec.int_bounds
            parser.add_argument(option.flag, type=int, metavar=f"{low}..{high}", **common)
        elif spec.type == "string":
            parser.add_argument(option.flag, metavar=option.metavar, **common)
        else:
            raise TypeError(f"policy field {spec.name} has no command-line form")


def policy_from_args(args: argparse.Namespace, now_ms: int) -> dict[str, Any]:
    """The policy JSON the options given ask for (options not given are left out)."""
    policy: dict[str, Any] = {}
    for spec in options():
        value = getattr(args, spec.name)
        if value is None or value is False or value == "":
            continue
        policy[spec.name] = _read(spec, value, now_ms)
    return policy


def _read(spec: Field, value: Any, now_ms: int) -> Any:
    option = spec.option
    assert option is not None
    if option.parse is None:
        return value
    if not option.repeat:
        return option.parse(value, now_ms)
    if option.keyed:
        return dict(option.parse(text, now_ms) for text in value)
    return [option.parse(text, now_ms) for text in value]
