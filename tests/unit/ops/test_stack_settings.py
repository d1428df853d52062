"""The demo stack's settings agree across services; replicas differ where they must."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import supervisor
from ops.demo_env import Ports, StackPlan, redis_url_with_db, stack_env


def test_services_agree_on_edge_origin_and_download_url() -> None:
    plan = StackPlan(Path("/tmp/s"), name="t1", topic_prefix="t1.", redis_db=10, ports=Ports())
    env = stack_env(plan, {"OTA_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert env["OTA_DOWNLOAD_BASE_URL"].endswith(f"://127.0.0.1:{env['OTA_EDGE_PORT']}")
    assert env["OTA_EDGE_ORIGIN_DIR"] == env["OTA_PACKAGE_DIR"] == "/tmp/s/packages"
    assert env["OTA_REDIS_URL"] == "redis://127.0.0.1:6379/10"
    ports = [env[k] for k in env if k.endswith(("_METRICS_PORT", "_PORT")) and "MQTT" not in k]
    assert len(ports) == len(set(ports))
    assert {env["OTA_WORKER_GROUP_ID"], env["OTA_GATEWAY_CONSUMER_GROUP"]} == {
        "t1-workers",
        "t1-gateway",
    }


@pytest.mark.parametrize(
    ("url", "db", "expected"),
    [
        ("redis://127.0.0.1:6379/0", 10, "redis://127.0.0.1:6379/10"),
        ("redis://127.0.0.1:6379", 3, "redis://127.0.0.1:6379/3"),
        ("redis://127.0.0.1:6379/", 3, "redis://127.0.0.1:6379/3"),
    ],
)
def test_redis_db_is_replaced(url: str, db: int, expected: str) -> None:
    assert redis_url_with_db(url, db) == expected


def test_gateway_replicas_get_slots_client_ids_and_ports(tmp_path: Path) -> None:
    env = {"OTA_GATEWAY_METRICS_PORT": "9200", "OTA_GATEWAY_CLIENT_ID": "ota-gateway-x"}
    services = supervisor.build_services(["gateway", "scheduler"], tmp_path, {"gateway": 2}, env)
    assert [s.name for s in services] == ["gateway-0", "gateway-1", "scheduler"]
    assert services[1].env == {
        "OTA_GATEWAY_METRICS_PORT": "9201",
        "OTA_GATEWAY_REPLICAS": "2",
        "OTA_GATEWAY_INDEX": "1",
        "OTA_GATEWAY_CLIENT_ID": "ota-gateway-x-r1",
    }
    assert services[2].env == {}


def test_scale_spec() -> None:
    assert supervisor.parse_scale("workers=2, gateway=3") == {"workers": 2, "gateway": 3}
    for bad in ("workers", "nope=2", "workers=0", "workers=x"):
        with pytest.raises(ValueError, match="--scale entry"):
            supervisor.parse_scale(bad)


def test_the_edge_serves_https_with_the_local_ca_s_certificate(tmp_path: Path) -> None:
    for name in ("edge.pem", "edge.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    plan = StackPlan(Path("/tmp/s"), name="t1", topic_prefix="t1.", redis_db=10, ports=Ports())
    env = stack_env(plan, {"OTA_BROKER_TLS_DIR": str(tmp_path)})
    assert env["OTA_DOWNLOAD_BASE_URL"] == f"https://127.0.0.1:{env['OTA_EDGE_PORT']}"
    assert env["OTA_EDGE_TLS_CERT"] == str(tmp_path / "edge.pem")
    assert env["OTA_EDGE_TLS_KEY"] == str(tmp_path / "edge.key")
    assert env["OTA_DOWNLOAD_CA_FILE"] == str(tmp_path / "ca.pem")
    plain = stack_env(plan, {"OTA_BROKER_TLS_DIR": str(tmp_path), "OTA_DEMO_PLAIN_HTTP": "1"})
    assert plain["OTA_DOWNLOAD_BASE_URL"].startswith("http://")
    assert "OTA_EDGE_TLS_CERT" not in plain
    (tmp_path / "edge.key").unlink()  # a stack whose `up` made no edge certificate yet
    older = stack_env(plan, {"OTA_BROKER_TLS_DIR": str(tmp_path)})
    assert older["OTA_DOWNLOAD_BASE_URL"].startswith("http://")
