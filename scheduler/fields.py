"""Typed reads of request JSON with specific errors naming the field's path.

Pure helpers shared by every request parser; each failure is a `ValidationError`
whose `code` says what was wrong and whose `field` says where.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

from scheduler.errors import ValidationError

_MISSING: Any = object()
N = TypeVar("N", int, float)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Obj:
    """A JSON object being parsed; rejects unknown keys so typos never pass silently."""

    def __init__(self, data: Any, where: str, allowed: frozenset[str] | None = None) -> None:
        if not isinstance(data, dict):
            raise ValidationError(
                f"{where or 'body'} must be an object, got {_kind(data)}",
                code="wrong_type",
                field=where or None,
            )
        self.data: Mapping[str, Any] = data
        self.where = where
        if allowed is not None:
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise ValidationError(
                    f"unknown field {self.path(unknown[0])!r}; allowed: {', '.join(sorted(allowed))}",
                    code="unknown_field",
                    field=self.path(unknown[0]),
                )

    def path(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        value = self.data.get(name)
        if value is None:
            if default is _MISSING:
                raise ValidationError(
                    f"{self.path(name)} is required", code="missing_field", field=self.path(name)
                )
            return default
        return value

    def _wrong(self, name: str, want: str, value: Any) -> ValidationError:
        return ValidationError(
            f"{self.path(name)} must be {want}, got {_kind(value)}",
            code="wrong_type",
            field=self.path(name),
        )

    def text(self, name: str, default: Any = _MISSING, *, max_len: int = 256) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        if len(value) > max_len:
            raise ValidationError(
                f"{self.path(name)} is longer than {max_len} characters",
                code="too_long",
                field=self.path(name),
            )
        return value

    def integer(self, name: str, default: Any = _MISSING, *, low: int, high: int) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self._wrong(name, "an integer", value)
        return check_range(self.path(name), value, low, high)

    def number(self, name: str, default: Any = _MISSING, *, low: float, high: float) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, "a number", value)
        if not math.isfinite(value):
            raise ValidationError(
                f"{self.path(name)} must be finite", code="out_of_range", field=self.path(name)
            )
        return check_range(self.path(name), float(value), low, high)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false", value)
        return value

    def array(self, name: str, default: Any = _MISSING, *, max_items: int) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list):
            raise self._wrong(name, "an array", value)
        if len(value) > max_items:
            raise ValidationError(
                f"{self.path(name)} has {len(value)} items; the limit is {max_items}",
                code="too_many",
                field=self.path(name),
            )
        return value

    def strings(self, name: str, *, max_items: int, max_len: int = 128) -> tuple[str, ...]:
        items = self.array(name, [], max_items=max_items)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item or len(item) > max_len:
                raise ValidationError(
                    f"{self.path(name)}[{i}] must be a non-empty string of at most {max_len} characters",
                    code="wrong_type",
                    field=f"{self.path(name)}[{i}]",
                )
        return tuple(dict.fromkeys(items))

    def child(self, name: str, allowed: frozenset[str]) -> Obj | None:
        value = self.data.get(name)
        return None if value is None else Obj(value, self.path(name), allowed)


def check_range(path: str, value: N, low: N, high: N) -> N:
    if value < low or value > high:
        raise ValidationError(
            f"{path}={value} is out of range [{low}, {high}]", code="out_of_range", field=path
        )
    return value
