"""The edge's settings, read once from OTA_EDGE_* (and the common OTA_*) variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ota.dev_secrets import SecretUse, refuse_development_secrets
from ota.object_store import ObjectStoreSettings, package_store, store_secrets
from ota.settings import CommonSettings, Env, SettingsError


@dataclass(frozen=True)
class EdgeSettings:
    common: CommonSettings
    host: str = "127.0.0.1"  # 0.0.0.0 (or the device-facing address) in a deployment
    port: int = 8443
    processes: int = 1  # >1: that many processes share the port with SO_REUSEPORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    cache_dir: Path = Path("/var/cache/ota-edge")
    cache_max_bytes: int = 0  # least recently used packages go beyond this; 0 = unbounded
    origin_dir: Path | None = None  # a shared package store laid out as <dir>/sha256/<hex>
    origin_url: str | None = None  # or an HTTP origin serving <url>/sha256/<hex>
    origin_token: str | None = None  # bearer sent to the HTTP origin
    origin_timeout_s: float = 30.0
    # or OTA_PACKAGE_STORE=s3: the bucket the scheduler writes packages to
    origin_store: ObjectStoreSettings | None = field(default=None, repr=False)
    open_files: int = 256  # open package file descriptors kept for reuse
    header_timeout_s: float = 10.0  # a request's headers must arrive within this
    idle_timeout_s: float = 60.0  # keep-alive wait, and the longest a send may stall
    max_header_bytes: int = 8192
    max_connections: int = 20_000
    max_ranges: int = 16
    rate_limit_bytes_s: int = 0  # per device across its connections; 0 = unlimited
    tls_buffer_bytes: int = 64 * 1024  # TLS copy chunk and write high-water, per connection
    events: bool = True  # track delivered bytes in Redis and emit download records
    progress_flush_ms: int = 200
    progress_ttl_s: int = 26 * 3600  # longer than a token lives
    metrics_port: int = 9108  # process i (of several) listens on metrics_port + i
    drain_s: float = 10.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EdgeSettings:
        env = Env(environ)
        cert = env.text("EDGE_TLS_CERT", "")
        key = env.text("EDGE_TLS_KEY", "")
        if bool(cert) != bool(key):
            raise SettingsError("OTA_EDGE_TLS_CERT and OTA_EDGE_TLS_KEY must be set together")
        origin_dir = env.text("EDGE_ORIGIN_DIR", "")
        origin_url = env.text("EDGE_ORIGIN_URL", "").rstrip("/")
        if origin_url and not origin_url.startswith(("http://", "https://")):
            raise SettingsError(f"OTA_EDGE_ORIGIN_URL={origin_url!r} is not an http(s) URL")
        origin_store = package_store(env)
        if origin_store is not None and (origin_dir or origin_url):
            raise SettingsError(
                "OTA_PACKAGE_STORE=s3 is the edge's origin: unset OTA_EDGE_ORIGIN_DIR/_URL"
            )
        common = CommonSettings.from_env(environ)
        origin_token = env.secret("EDGE_ORIGIN_TOKEN", "") or None
        settings = cls(
            common=common,
            host=env.text("EDGE_HOST", "127.0.0.1"),
            port=env.integer("EDGE_PORT", 8443, min_value=0, max_value=65535),
            processes=env.integer(
                "EDGE_PROCESSES", 1, min_value=1, max_value=max(64, os.cpu_count() or 1)
            ),
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            cache_dir=Path(env.text("EDGE_CACHE_DIR", "/var/cache/ota-edge")),
            cache_max_bytes=env.integer("EDGE_CACHE_MAX_BYTES", 0, min_value=0),
            origin_dir=Path(origin_dir) if origin_dir else None,
            origin_url=origin_url or None,
            origin_token=origin_token,
            origin_timeout_s=env.number("EDGE_ORIGIN_TIMEOUT_S", 30.0, min_value=0.1),
            origin_store=origin_store,
            open_files=env.integer("EDGE_OPEN_FILES", 256, min_value=1, max_value=100_000),
            header_timeout_s=env.number("EDGE_HEADER_TIMEOUT_S", 10.0, min_value=0.05),
            idle_timeout_s=env.number("EDGE_IDLE_TIMEOUT_S", 60.0, min_value=0.05),
            max_header_bytes=env.integer(
                "EDGE_MAX_HEADER_BYTES", 8192, min_value=1024, max_value=1 << 20
            ),
            max_connections=env.integer(
                "EDGE_MAX_CONNECTIONS", 20_000, min_value=1, max_value=1_000_000
            ),
            max_ranges=env.integer("EDGE_MAX_RANGES", 16, min_value=1, max_value=1000),
            rate_limit_bytes_s=env.integer("EDGE_RATE_LIMIT_BYTES_S", 0, min_value=0),
            tls_buffer_bytes=env.integer(
                "EDGE_TLS_BUFFER_BYTES", 64 * 1024, min_value=4096, max_value=4 << 20
            ),
            events=env.flag("EDGE_EVENTS", True),
            progress_flush_ms=env.integer(
                "EDGE_PROGRESS_FLUSH_MS", 200, min_value=10, max_value=60_000
            ),
            progress_ttl_s=env.integer("EDGE_PROGRESS_TTL_S", 26 * 3600, min_value=60),
            metrics_port=env.integer("EDGE_METRICS_PORT", 9108, min_value=0, max_value=65535),
            drain_s=env.number("EDGE_DRAIN_S", 10.0, min_value=0.0),
        )
        secrets = [common.token_keys_use()]
        if origin_token is not None:
            secrets.append(SecretUse.of("EDGE_ORIGIN_TOKEN", origin_token, development=False))
        secrets.extend(store_secrets(origin_store))
        refuse_development_secrets(common.dev_mode, [settings.host], secrets)
        return settings
