"""What the e2e tests share: the stack's addresses, a webhook receiver, and a rollout runner.

A rollout here is real end to end: simulated devices on their own MQTT connections, a
package uploaded through the API, a task created through the API, the services as
separate processes (`ota up`), and the webhook notifications received over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devices.agent import Outcome
from devices.behaviour import Behaviour
from devices.fleet import Fleet, FleetConfig, Mode, outcome_of
from ops.demo_env import StackPlan
from ops.fleet_group import registrar
from ota.settings import CommonSettings
from tests.stack_kit import running_stack

T = TypeVar("T")
FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
CLOSING = ("SUCCEEDED", "FAILED", "CANCELLED", "WAITING_RETRY")  # job states that end a try
WEBHOOK_SECRET = "e2e-webhook-secret-0123"


class WebhookReceiver:
    """A local HTTP server that keeps every notification POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return

        self._received, self._lock = received, lock
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def of_task(self, task_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [n for n in self._received if n.get("task_id") == task_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class E2E:
    """The running stack of the e2e session."""

    plan: StackPlan
    env: Mapping[str, str]
    webhooks: WebhookReceiver
    signing_key: ed25519.Ed25519PrivateKey  # its public half is the scheduler's package key

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.plan.api_url,
            headers={"Authorization": f"Bearer {self.plan.write_key}"},
            timeout=30,
        )

    def common(self) -> CommonSettings:
        return CommonSettings.from_env(self.env)


@contextmanager
def e2e_stack(
    name: str,
    *,
    kafka_bootstrap: str,
    redis_url: str,
    redis_db: int,
    state_dir: Path,
    extra: Mapping[str, str],
) -> Iterator[E2E]:
    """A stack for e2e tests (`tests.stack_kit.running_stack`) with a webhook receiver
    registered and a package-signing key the scheduler checks uploads with."""
    # Not required: unsigned uploads go on working; signed rollouts sign with the private half.
    signing_key = ed25519.Ed25519PrivateKey.generate()
    key_file = state_dir / "package-keys.pem"
    key_file.write_bytes(public_pem(signing_key))
    settings = {
        "OTA_PACKAGE_PUBLIC_KEY": str(key_file),
        "OTA_WEBHOOK_BACKOFF_S": "0.05",
        "OTA_WEBHOOK_TIMEOUT_S": "2",
        **extra,
    }
    if "OTA_KAFKA_CLIENT" in os.environ:  # the suite on the other client: set it to choose
        settings["OTA_KAFKA_CLIENT"] = os.environ["OTA_KAFKA_CLIENT"]
    stack_dir = state_dir / "stack"
    stack_dir.mkdir()
    with (
        receiver() as webhooks,
        running_stack(
            name,
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_url,
            redis_db=redis_db,
            state_dir=stack_dir,
            extra=settings,
        ) as stack,
    ):
        plan = stack.plan
        hook = httpx.post(
            f"{plan.api_url}/v1/webhooks",
            headers={"Authorization": f"Bearer {plan.write_key}"},
            json={"url": webhooks.url, "secret": WEBHOOK_SECRET},
        )
        assert hook.status_code == 201, hook.text
        yield E2E(plan, stack.env, webhooks, signing_key)


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout_s: float) -> T:
    """Poll `probe` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last saw {last!r}")


@dataclass
class Rollout:
    """Everything a finished rollout left to assert on."""

    task: dict[str, Any]
    devices: dict[str, dict[str, Any]]  # task device rows by device id
    views: dict[str, dict[str, Any]]  # /v1/devices/<id> (with the timeline) by device id
    histories: dict[str, list[dict[str, Any]]]  # /v1/devices/<id>/history by device id
    notifications: list[dict[str, Any]]
    outcomes: dict[str, str]  # the simulator's own view, by device id
    ids: dict[str, str] = field(default_factory=dict)  # scenario -> device id
    agents: dict[str, Outcome] = field(default_factory=dict)  # each agent's record, by id

    def device(self, scenario: str) -> dict[str, Any]:
        return self.devices[self.ids[scenario]]

    def timeline(self, scenario: str) -> list[dict[str, Any]]:
        """This task's job events, oldest first, with their ids and details, as the
        history endpoint reads them back from the log (Redis folds a succeeded try), in the
        order the job saw them: a download fact that reached the log after its try's
        result (`before_result`) goes before that result, as on the device's timeline;
        never re-sorted by the stamps of different services' clocks."""
        entries: list[dict[str, Any]] = []
        for entry in self.histories[self.ids[scenario]]:
            if entry["task_id"] != self.task["id"]:
                continue
            if entry["detail"].get("before_result"):
                closing = [
                    i for i, e in enumerate(entries) if e["to"] in CLOSING and e["to"] != e["from"]
                ]
                entries.insert(closing[-1] if closing else len(entries), entry)
            else:
                entries.append(entry)
        return entries

    def timeline_states(self, scenario: str) -> list[str]:
        """The job states the device went through for this task, oldest first."""
        states: list[str] = []
        for entry in self.timeline(scenario):
            state = entry["to"]
            if state and (not states or states[-1] != state):
                states.append(state)
        return states

    def device_results(self, scenario: str) -> list[dict[str, Any]]:
        device_id = self.ids[scenario]
        return [
            n
            for n in self.notifications
            if n["kind"] == "device_result" and n["device_id"] == device_id
        ]


async def upload(
    api: httpx.AsyncClient, content: bytes, signature: bytes | None = None, **meta: str
) -> dict[str, Any]:
    params = {"type": "firmware", "version": "2.0", "file_name": "fw.bin", **meta}
    headers = {"X-OTA-Signature": base64.b64encode(signature).decode()} if signature else {}
    response = await api.post("/v1/packages", params=params, content=content, headers=headers)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def public_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def run_rollout(
    e2e: E2E,
    behaviours: Sequence[tuple[str, Behaviour]],
    *,
    package: bytes,
    policy: Mapping[str, Any],
    allowed_sources: str = "",
    timeout_s: float = 120.0,
    signed: bool = False,
) -> Rollout:
    """One task over one simulated device per (scenario, behaviour), run to its end."""
    run = uuid.uuid4().hex[:8]
    by_index = dict(enumerate(b for _, b in behaviours))
    config = FleetConfig.from_settings(
        e2e.common(),
        len(behaviours),
        mode=Mode.CONNECTIONS,
        prefix=f"e2e-{run}",
        behaviour_of=lambda index, _device: by_index[index],
    )
    ids = {name: device for (name, _), device in zip(behaviours, config.device_ids(), strict=True)}
    async with e2e.api() as api, Fleet(replace(config, register=registrar(e2e.plan))) as fleet:
        return await _run(e2e, api, fleet, ids, package, policy, allowed_sources, timeout_s, signed)


async def _run(
    e2e: E2E,
    api: httpx.AsyncClient,
    fleet: Fleet,
    ids: dict[str, str],
    package: bytes,
    policy: Mapping[str, Any],
    allowed_sources: str,
    timeout_s: float,
    signed: bool,
) -> Rollout:
    run = uuid.uuid4().hex[:8]
    meta = {"allowed_sources": allowed_sources} if allowed_sources else {}
    signature = e2e.signing_key.sign(hashlib.sha256(package).digest()) if signed else None
    pkg = await upload(api, package, signature, **meta)
    created = await api.post(
        "/v1/tasks",
        json={
            "name": f"e2e {run}",
            "type": "firmware",
            "package_id": pkg["id"],
            "targets": {"device_ids": list(ids.values())},
            "policy": dict(policy),
        },
    )
    assert created.status_code == 201, created.text
    tid = created.json()["id"]

    async def finished() -> dict[str, Any] | None:
        task: dict[str, Any] = (await api.get(f"/v1/tasks/{tid}")).json()
        return task if task["status"] in FINISHED else None

    task = await eventually(finished, f"task {tid} to finish", timeout_s)

    async def final_notice() -> list[dict[str, Any]] | None:
        notes = e2e.webhooks.of_task(tid)
        done = [n for n in notes if n["kind"] == "task_status" and n["status"] in FINISHED]
        results = {n["device_id"] for n in notes if n["kind"] == "device_result"}
        return notes if done and len(results) == len(ids) else None

    notifications = await eventually(final_notice, "the webhook notifications", 30)
    rows = (await api.get(f"/v1/tasks/{tid}/devices", params={"limit": 1000})).json()
    views = {d: (await api.get(f"/v1/devices/{d}")).json() for d in ids.values()}
    histories = {d: await history(api, d) for d in ids.values()}
    outcomes = {d: outcome_of(agent) for d, agent in fleet.agents.items()}
    return Rollout(
        task=task,
        devices={row["device_id"]: row for row in rows["items"]},
        views=views,
        histories=histories,
        notifications=notifications,
        outcomes=outcomes,
        ids=ids,
        agents={d: agent.outcome for d, agent in fleet.agents.items()},
    )


async def history(api: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    """Every job event of the device, oldest first, read back from the log page by page."""
    entries: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "1000"}
    while True:
        answer = await api.get(f"/v1/devices/{device_id}/history", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        entries += body["items"]
        if body["next_cursor"] is None:
            return entries
        params["cursor"] = body["next_cursor"]


@contextmanager
def receiver() -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    try:
        yield hooks
    finally:
        hooks.close()
