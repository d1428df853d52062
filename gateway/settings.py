"""The gateway's settings, read once from OTA_ environment variables (see docs/gateway.md)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.presence import SOURCES
from gateway.slots import Split, SplitMode
from ota.dev_secrets import refuse_development_secrets
from ota.settings import CommonSettings, Env, SettingsError

UPLINK_FILTER = "$oc/devices/+/sys/events/up"


@dataclass(frozen=True)
class GatewaySettings:
    common: CommonSettings
    split: Split
    client_id: str
    session_expiry_s: int
    uplink_in_flight: int
    downlink_in_flight: int
    consumer_group: str
    presence_source: str  # a key of gateway.presence.SOURCES, or "none"
    uplink_presence_interval_ms: int
    platform_client_prefixes: tuple[str, ...]
    metrics_port: int
    drain_timeout_s: float
    produce_linger_ms: int
    # The platform MQTT connection over TLS (OTA_MQTT_PLATFORM_TLS), verifying the broker
    # against OTA_MQTT_PLATFORM_CA_FILE (the system's CAs when unset).
    platform_tls: bool = False
    platform_ca_file: Path | None = None

    def platform_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of the platform connection, or None for plain TCP."""
        if not self.platform_tls:
            return None
        cafile = str(self.platform_ca_file) if self.platform_ca_file is not None else None
        return ssl.create_default_context(cafile=cafile)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = Env(environ)
        common = CommonSettings.from_env(environ)
        # The platform password travels to the broker: a published one is refused unless
        # both the broker and the gateway's metrics listener are on loopback.
        refuse_development_secrets(
            common.dev_mode,
            [common.mqtt_host, common.metrics_host],
            [common.platform_password_use()],
        )
        replicas = env.integer("GATEWAY_REPLICAS", 1, min_value=1, max_value=1024)
        index = env.integer("GATEWAY_INDEX", 0, min_value=0, max_value=replicas - 1)
        mode = env.text("GATEWAY_SPLIT", "slot")
        if mode not in SplitMode.__members__.values():
            raise SettingsError(f"OTA_GATEWAY_SPLIT={mode!r} is not slot or shared")
        presence = env.text("GATEWAY_PRESENCE_SOURCE", "ota")
        if presence != "none" and presence not in SOURCES:
            raise SettingsError(
                f"OTA_GATEWAY_PRESENCE_SOURCE={presence!r} is not one of {', '.join([*SOURCES, 'none'])}"
            )
        platform_tls = env.flag("MQTT_PLATFORM_TLS", False)
        platform_ca = env.readable_file("MQTT_PLATFORM_CA_FILE")
        if platform_ca is not None and not platform_tls:
            raise SettingsError("OTA_MQTT_PLATFORM_CA_FILE is set but OTA_MQTT_PLATFORM_TLS is not")
        return cls(
            common=common,
            split=Split(
                SplitMode(mode),
                replicas,
                index,
                env.text("GATEWAY_SHARE_GROUP", "ota-gateway"),
            ),
            client_id=env.text("GATEWAY_CLIENT_ID", f"ota-gateway-{index}"),
            session_expiry_s=env.integer(
                "GATEWAY_SESSION_EXPIRY_S", 3600, min_value=1, max_value=0xFFFFFFFF
            ),
            uplink_in_flight=env.integer(
                "GATEWAY_UPLINK_IN_FLIGHT", 4000, min_value=1, max_value=65535
            ),
            downlink_in_flight=env.integer(
                "GATEWAY_DOWNLINK_IN_FLIGHT", 500, min_value=1, max_value=65000
            ),
            consumer_group=env.text("GATEWAY_CONSUMER_GROUP", "ota-gateway"),
            presence_source=presence,
            uplink_presence_interval_ms=env.integer(
                "GATEWAY_UPLINK_PRESENCE_INTERVAL_MS", 30_000, min_value=0
            ),
            platform_client_prefixes=env.items("GATEWAY_PLATFORM_CLIENT_PREFIXES", ("ota-",)),
            metrics_port=env.integer("GATEWAY_METRICS_PORT", 9102, min_value=0, max_value=65535),
            drain_timeout_s=env.number("GATEWAY_DRAIN_TIMEOUT_S", 10.0, min_value=0.0),
            produce_linger_ms=env.integer(
                "GATEWAY_PRODUCE_LINGER_MS", 25, min_value=0, max_value=1000
            ),
            platform_tls=platform_tls,
            platform_ca_file=platform_ca,
        )
