"""The refusal to run a deployment on development secrets.

The local stack, the demo and the tests work with no setup because every secret has a
published development value (the write API key, the download-token key, the broker
platform password, the device-credential key). A service that reaches beyond its own
machine must not run on them, nor on a `change-me` placeholder copied from
deploy/compose/env.example. Each service's settings class names the secrets it uses
and the addresses it listens on (or, for the gateway's broker password, reaches), and
`refuse_development_secrets` raises a SettingsError naming the first offending variable.

OTA_DEV_MODE decides:

| OTA_DEV_MODE | development value | `change-me` placeholder |
|---|---|---|
| unset (auto) | allowed while every address is loopback | refused |
| 1 | allowed everywhere (development machines, tests) | allowed |
| 0 | refused | refused |
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ota.env import PREFIX, Env, SettingsError

PLACEHOLDER = "change-me"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class DevMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"

    @classmethod
    def from_env(cls, env: Env) -> DevMode:
        if not env.is_set("DEV_MODE"):
            return cls.AUTO
        return cls.ON if env.flag("DEV_MODE", False) else cls.OFF


@dataclass(frozen=True)
class SecretUse:
    """One secret a service runs with: its variable, and whether it is a development
    value (unset included) or holds the `change-me` placeholder."""

    variable: str  # without the OTA_ prefix
    development: bool
    placeholder: bool

    @classmethod
    def of(cls, variable: str, value: str, *, development: bool) -> SecretUse:
        return cls(variable, development, PLACEHOLDER in value.lower())


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; false for 0.0.0.0, :: and any other name."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_development_secrets(
    mode: DevMode, addresses: Iterable[str], secrets: Iterable[SecretUse]
) -> None:
    """Raises SettingsError for the first secret this deployment must not run with.

    `addresses` are the hosts the service listens on, or sends the secret to."""
    if mode is DevMode.ON:
        return
    public = [host for host in addresses if not is_loopback(host)]
    for secret in secrets:
        name = PREFIX + secret.variable
        if secret.placeholder:
            raise SettingsError(
                f"{name} still holds a {PLACEHOLDER!r} placeholder: set a random secret "
                f"(or {PREFIX}DEV_MODE=1 on a development machine)"
            )
        if secret.development and mode is DevMode.OFF:
            raise SettingsError(
                f"{name} is unset or a published development value and {PREFIX}DEV_MODE=0: "
                "set a random secret"
            )
        if secret.development and public:
            raise SettingsError(
                f"{name} is unset or a published development value, and the service "
                f"listens on or connects to {public[0]} beyond loopback: set a random "
                f"secret (or {PREFIX}DEV_MODE=1 on a development machine)"
            )
