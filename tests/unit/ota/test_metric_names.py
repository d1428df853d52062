"""Every service's metrics follow ota_<service>_<what>, and the dashboard asks for real ones."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from ota.metrics import REGISTRY

# The modules that declare each service's metrics.
METRIC_MODULES = (
    "gateway.metrics",
    "workers.telemetry",
    "download_edge.metrics",
    "scheduler.consumers",
    "scheduler.reconciler",
    "scheduler.webhooks",
)
SERVICES = ("gateway", "worker", "edge", "scheduler")
# Declared once in ota/ for every service (a process is one service).
SHARED = {"ota_retries_total"}
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "ota-rollout.json"
SUFFIXES = ("_bucket", "_sum", "_count")


def registered() -> set[str]:
    for module in (*METRIC_MODULES, "ota.backoff"):
        importlib.import_module(module)
    names = set()
    for metric in REGISTRY.collect():
        names.add(metric.name + ("_total" if metric.type == "counter" else ""))
    return names


def test_every_metric_is_named_after_its_service() -> None:
    names = registered()
    assert names
    pattern = re.compile(rf"ota_({'|'.join(SERVICES)})_[a-z0-9_]+")
    assert sorted(n for n in names - SHARED if not pattern.fullmatch(n)) == []


def test_dashboard_queries_only_metrics_that_exist() -> None:
    names = registered()
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    wanted = {m for e in exprs for m in re.findall(r"\bota_[a-z0-9_]+", e)}
    for suffix in SUFFIXES:
        wanted = {w.removesuffix(suffix) for w in wanted}
    assert wanted, "the dashboard asks for no ota_ metric"
    assert sorted(wanted - names) == []
