"""One consistent set of OTA_ settings for the four services run together on one machine.

The services read their settings from the environment; run side by side they must agree
on a few things, which this module derives from one `StackPlan`:
- the download base URL the workers put in commands points at the edge's port, over HTTPS
  with the local CA's edge certificate, which the simulated devices verify (`edge_tls`);
- the edge's origin is the scheduler's package store (`<package dir>/sha256/<hex>`);
- the gateway talks to the broker's platform listener (the common MQTT settings);
- metrics ports do not clash (the scheduler serves /metrics on its API port);
- consumer groups, the gateway's MQTT client id and the topic prefix belong to this
  stack, so a test stack and the demo can share one Kafka and one broker.

`make demo`, the e2e tests and the rollout benchmark all build their environment here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Where deploy/local/up keeps the local CA and the broker's and edge's certificates, unless
# OTA_BROKER_TLS_DIR (in the env file `up` writes) says otherwise.
LOCAL_TLS_DIR = Path(__file__).resolve().parent.parent / ".state" / "tls"
DEMO_WRITE_KEY = "demo-write-key-0001"
DEMO_READ_KEY = "demo-read-key-0001"
DEMO_ADMIN_KEY = "demo-admin-key-0001"  # registers the simulated fleet's credentials


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Ports:
    api: int = 8080
    edge: int = 8443
    edge_metrics: int = 9108
    gateway_metrics: int = 9102
    worker_metrics: int = 9101

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class StackPlan:
    """Where one stack's state lives and what it is called on the shared infrastructure."""

    state_dir: Path
    name: str = "ota"  # consumer groups, the gateway client id
    topic_prefix: str = ""
    redis_db: int = 0
    partitions: int = 12
    replicas: int = 1  # per partition of its topics; a cluster's runs ask for 3
    min_insync_replicas: int | None = None  # None: the brokers' default
    ports: Ports = field(default_factory=Ports)
    write_key: str = DEMO_WRITE_KEY
    read_key: str = DEMO_READ_KEY
    admin_key: str = DEMO_ADMIN_KEY
    gateway_session_expiry_s: int = 60
    extra: Mapping[str, str] = field(default_factory=dict)  # last word on any variable

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def api_keys(self) -> str:
        """OTA_API_KEYS of the stack: a read, a write and an admin key (device credentials)."""
        return f"{self.read_key}:read,{self.write_key}:read+write,{self.admin_key}:admin"

    @property
    def package_dir(self) -> Path:
        return self.state_dir / "packages"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def metrics_urls(self) -> dict[str, str]:
        p = self.ports
        return {
            "scheduler": f"{self.api_url}/metrics",
            "workers": f"http://127.0.0.1:{p.worker_metrics}/metrics",
            "gateway": f"http://127.0.0.1:{p.gateway_metrics}/metrics",
            "download_edge": f"http://127.0.0.1:{p.edge_metrics}/metrics",
        }


def redis_url_with_db(url: str, db: int) -> str:
    """The same server as `url`, on database `db` (a URL's path names the db)."""
    base, _, last = url.rstrip("/").rpartition("/")
    root = base if last.isdigit() and base.count("/") >= 2 else url.rstrip("/")
    return f"{root}/{db}"


def stack_env(plan: StackPlan, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The full environment for the services of `plan`, on top of `base` (os.environ)."""
    env = dict(os.environ if base is None else base)
    base_redis = env.get("OTA_REDIS_URL") or "redis://127.0.0.1:6379"
    redis_url = redis_url_with_db(base_redis, plan.redis_db)
    # Device credentials are the broker's: every stack on it shares one store (db 1 unless
    # the local stack's env says otherwise).
    credentials_url = env.get("OTA_CREDENTIALS_REDIS_URL") or redis_url_with_db(base_redis, 1)
    p = plan.ports
    env.update(
        {
            "OTA_REDIS_URL": redis_url,
            "OTA_CREDENTIALS_REDIS_URL": credentials_url,
            "OTA_TOPIC_PREFIX": plan.topic_prefix,
            "OTA_PARTITIONS": str(plan.partitions),
            "OTA_STATE_DIR": str(plan.state_dir),
            # scheduler
            "OTA_SCHEDULER_HOST": "127.0.0.1",
            "OTA_SCHEDULER_PORT": str(p.api),
            "OTA_API_KEYS": plan.api_keys,
            "OTA_PACKAGE_DIR": str(plan.package_dir),
            "OTA_SCHEDULER_GROUP": f"{plan.name}-scheduler",
            # download edge: serves the scheduler's package store
            "OTA_EDGE_HOST": "127.0.0.1",
            "OTA_EDGE_PORT": str(p.edge),
            "OTA_EDGE_ORIGIN_DIR": str(plan.package_dir),
            "OTA_EDGE_CACHE_DIR": str(plan.state_dir / "edge-cache"),
            "OTA_EDGE_METRICS_PORT": str(p.edge_metrics),
            # gateway
            "OTA_GATEWAY_CLIENT_ID": f"ota-gateway-{plan.name}-0",
            "OTA_GATEWAY_CONSUMER_GROUP": f"{plan.name}-gateway",
            "OTA_GATEWAY_METRICS_PORT": str(p.gateway_metrics),
            # These stacks come and go with fresh client ids; a long session expiry would
            # leave the broker queueing every uplink for a gateway that never returns.
            "OTA_GATEWAY_SESSION_EXPIRY_S": str(plan.gateway_session_expiry_s),
            # workers
            "OTA_WORKER_GROUP_ID": f"{plan.name}-workers",
            "OTA_WORKER_METRICS_PORT": str(p.worker_metrics),
        }
    )
    env.update(edge_tls({**env, **plan.extra}, p.edge))
    env.update(plan.extra)
    return env


def edge_tls(env: Mapping[str, str], port: int) -> dict[str, str]:
    """HTTPS for the edge: the edge certificate and the CA that `deploy/local/up` keeps in
    OTA_BROKER_TLS_DIR, else `.state/tls` (deploy/local/make_certs.py), the download URL
    `https://`, and the CA for the devices (OTA_DOWNLOAD_CA_FILE). Plain HTTP only with
    OTA_DEMO_PLAIN_HTTP=1, or where the local stack made no edge certificate (a stack
    started before it did)."""
    folder = Path(env.get("OTA_BROKER_TLS_DIR", "").strip() or LOCAL_TLS_DIR)
    cert, key, ca = (folder / name for name in ("edge.pem", "edge.key", "ca.pem"))
    plain = env.get("OTA_DEMO_PLAIN_HTTP", "").strip() == "1"
    if plain or not all(f.is_file() for f in (cert, key, ca)):
        return {"OTA_DOWNLOAD_BASE_URL": f"http://127.0.0.1:{port}"}
    return {
        "OTA_DOWNLOAD_BASE_URL": f"https://127.0.0.1:{port}",
        "OTA_EDGE_TLS_CERT": str(cert),
        "OTA_EDGE_TLS_KEY": str(key),
        "OTA_DOWNLOAD_CA_FILE": str(ca),
    }
