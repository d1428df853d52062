"""The console's session key: from OTA_CONSOLE_SESSION_KEY or the file its _FILE names."""

from __future__ import annotations

from pathlib import Path

import pytest

from ota.settings import SettingsError
from scheduler.console.settings import ConsoleSettings, derived_key
from scheduler.settings import Scope

KEYS = {"reader-key-1": frozenset({Scope.READ})}
SECRET = "s" * 40


def test_the_session_key_comes_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "session-key"
    path.write_text(SECRET + "\n")
    settings = ConsoleSettings.from_env(KEYS, {"OTA_CONSOLE_SESSION_KEY_FILE": str(path)})
    assert settings.session_key == SECRET.encode()
    assert ConsoleSettings.from_env(KEYS, {"OTA_CONSOLE_SESSION_KEY": SECRET}).session_key == (
        SECRET.encode()
    )
    assert ConsoleSettings.from_env(KEYS, {}).session_key == derived_key(KEYS)


@pytest.mark.parametrize(
    ("content", "also_env", "message"),
    [
        ("short", False, "at least 32 characters"),
        ("", False, "is empty"),
        (SECRET, True, "both set"),
        (None, False, "cannot be read"),
    ],
)
def test_a_bad_session_key_file_is_refused(
    tmp_path: Path, content: str | None, also_env: bool, message: str
) -> None:
    path = tmp_path / "session-key"
    if content is not None:
        path.write_text(content)
    environ = {"OTA_CONSOLE_SESSION_KEY_FILE": str(path)}
    if also_env:
        environ["OTA_CONSOLE_SESSION_KEY"] = SECRET
    with pytest.raises(SettingsError, match=message) as caught:
        ConsoleSettings.from_env(KEYS, environ)
    assert SECRET not in str(caught.value)
