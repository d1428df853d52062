"""Typed access to OTA_-prefixed environment variables, secrets from files included.

`Env` reads one environment mapping; every service's settings class builds on it
(ota/settings.py and each service's settings.py). A bad value raises `SettingsError`
naming the variable, which each service's main turns into exit status 2.

Secrets (`Env.secret`) may come from `OTA_<NAME>` or from the file named by
`OTA_<NAME>_FILE` (a Kubernetes Secret volume, a Docker secret), never from both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

PREFIX = "OTA_"
FILE_SUFFIX = "_FILE"
MAX_SECRET_FILE_BYTES = 64 * 1024
T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class Env:
    """Typed, validated access to OTA_ variables of one environment mapping."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}{name}={raw!r} is not {what}") from exc

    def is_set(self, name: str) -> bool:
        """Whether OTA_<name> (or, for a secret, OTA_<name>_FILE) holds a value."""
        return self._raw(name) is not None or self._raw(name + FILE_SUFFIX) is not None

    def text(self, name: str, default: str) -> str:
        raw = self._raw(name)
        return default if raw is None else raw

    def secret(self, name: str, default: str) -> str:
        """OTA_<name>, or the content of the file OTA_<name>_FILE names (one trailing
        newline and surrounding blanks dropped); the error never shows the value."""
        path = self._raw(name + FILE_SUFFIX)
        if path is None:
            return self.text(name, default)
        if self._raw(name) is not None:
            raise SettingsError(
                f"{PREFIX}{name} and {PREFIX}{name}{FILE_SUFFIX} are both set: keep one"
            )
        try:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_SECRET_FILE_BYTES + 1)
        except OSError as exc:
            raise SettingsError(
                f"{PREFIX}{name}{FILE_SUFFIX}={path!r} cannot be read: {exc.strerror}"
            ) from exc
        if len(data) > MAX_SECRET_FILE_BYTES:
            raise SettingsError(
                f"{PREFIX}{name}{FILE_SUFFIX}={path!r} is over {MAX_SECRET_FILE_BYTES} bytes"
            )
        try:
            value = data.decode().strip()
        except UnicodeDecodeError as exc:
            raise SettingsError(f"{PREFIX}{name}{FILE_SUFFIX}={path!r} is not UTF-8") from exc
        if not value:
            raise SettingsError(f"{PREFIX}{name}{FILE_SUFFIX}={path!r} is empty")
        return value

    def integer(
        self, name: str, default: int, *, min_value: int | None = None, max_value: int | None = None
    ) -> int:
        value = self._parse(name, default, int, "an integer")
        _check_range(name, value, min_value, max_value)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> float:
        value = self._parse(name, default, float, "a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise SettingsError(f"{PREFIX}{name} must be a finite number")
        _check_range(name, value, min_value, max_value)
        return value

    def flag(self, name: str, default: bool) -> bool:
        return self._parse(name, default, _parse_bool, "a boolean (true/false/1/0/yes/no)")

    def items(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def readable_file(self, name: str) -> Path | None:
        """OTA_<name> as the path of a file that exists and can be read, or None if unset."""
        raw = self._raw(name)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise SettingsError(f"{PREFIX}{name}={raw!r} is not a readable file")
        return path


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise SettingsError(f"{PREFIX}{name}={value} is below the minimum {low}")
    if high is not None and value > high:
        raise SettingsError(f"{PREFIX}{name}={value} is above the maximum {high}")
