"""Writes deploy/grafana/ota-rollout.json, the rollout dashboard (run after changing it).

    .venv/bin/python deploy/grafana/build_dashboard.py

Data source: a Prometheus scraping every service's /metrics (see docs/operations.md) and,
for consumer lag per partition, kafka_exporter (`kafka_consumergroup_lag`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    stack: bool = False,
) -> dict[str, Any]:
    x, y, w, h = grid
    custom: dict[str, Any] = {"fillOpacity": 30 if stack else 10}
    if stack:
        custom["stacking"] = {"mode": "normal"}
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right"}},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels = [
        panel(
            1,
            "Devices finished (cumulative)",
            [
                ('sum(ota_scheduler_job_transitions_total{state="SUCCEEDED"})', "succeeded"),
                ('sum(ota_scheduler_job_transitions_total{state="FAILED"})', "failed"),
                ("sum(ota_scheduler_released_total)", "released"),
            ],
            (0, 0, 12, 8),
        ),
        panel(
            2,
            "Rollout rate (devices/s)",
            [
                ("sum(rate(ota_scheduler_released_total[1m]))", "released"),
                (
                    'sum(rate(ota_scheduler_job_transitions_total{state=~"SUCCEEDED|FAILED"}[1m]))',
                    "finished",
                ),
                (
                    'sum(rate(ota_scheduler_job_transitions_total{state="SUCCEEDED"}[1m]))',
                    "succeeded",
                ),
            ],
            (12, 0, 12, 8),
        ),
        panel(
            3,
            "Job transitions by state (per s)",
            [("sum by (state) (rate(ota_scheduler_job_transitions_total[1m]))", "{{state}}")],
            (0, 8, 12, 8),
            stack=True,
        ),
        panel(
            4,
            "Failure causes (in range)",
            [
                (
                    'sum by (cause) (increase(ota_scheduler_job_transitions_total{state=~"FAILED|WAITING_RETRY"}[$__range]))',
                    "cause {{cause}}",
                )
            ],
            (12, 8, 12, 8),
            kind="barchart",
        ),
        panel(
            5,
            "Consumer lag per partition (kafka_exporter)",
            [
                (
                    'sum by (consumergroup, partition) (kafka_consumergroup_lag{topic=~".*ota\\\\.(inbox|commands|job-events)"})',
                    "{{consumergroup}} p{{partition}}",
                )
            ],
            (0, 16, 12, 8),
        ),
        panel(
            6,
            "Download throughput",
            [
                ("sum(rate(ota_edge_bytes_sent_total[1m]))", "bytes/s"),
            ],
            (12, 16, 6, 8),
            unit="Bps",
        ),
        panel(
            7,
            "Edge requests and connections",
            [
                ("sum by (status) (rate(ota_edge_requests_total[1m]))", "HTTP {{status}}"),
                ("sum(ota_edge_connections_active)", "open connections"),
            ],
            (18, 16, 6, 8),
        ),
        panel(
            8,
            "Gateway messages (per s)",
            [
                ("sum by (type) (rate(ota_gateway_messages_in_total[1m]))", "in {{type}}"),
                ("sum by (type) (rate(ota_gateway_messages_out_total[1m]))", "out {{type}}"),
            ],
            (0, 24, 12, 8),
        ),
        panel(
            9,
            "Worker records and batch time",
            [
                ("sum by (outcome) (rate(ota_worker_records_total[1m]))", "records {{outcome}}"),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(ota_worker_batch_seconds_bucket[5m])))",
                    "batch p99 (s)",
                ),
                (
                    "histogram_quantile(0.99, sum by (le) (rate(ota_worker_deadline_lag_seconds_bucket[5m])))",
                    "deadline lag p99 (s)",
                ),
            ],
            (12, 24, 12, 8),
        ),
        panel(
            10,
            "Dead letters and webhook deliveries",
            [
                ("sum(rate(ota_worker_dead_letters_total[5m]))", "worker dead letters"),
                (
                    "sum by (reason) (rate(ota_gateway_dead_letters_total[5m]))",
                    "gateway {{reason}}",
                ),
                (
                    "sum by (outcome) (rate(ota_scheduler_webhook_attempts_total[5m]))",
                    "webhook {{outcome}}",
                ),
            ],
            (0, 32, 24, 8),
        ),
    ]
    return {
        "uid": "ota-rollout",
        "title": "OTA rollout",
        "tags": ["ota"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


def main() -> None:
    target = Path(__file__).with_name("ota-rollout.json")
    target.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
