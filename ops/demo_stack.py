"""Run the four services of one `StackPlan` under `ota up`, and know when they are ready.

`Stack.start()` creates the plan's topics, starts the supervisor as a child process
(service logs in `<state dir>/logs/`), and waits until the scheduler answers, the edge
accepts connections, every metrics endpoint answers and every consumer group of the
stack holds all its partitions. `Stack.stop()` stops the supervisor (which stops the
services with SIGTERM, then SIGKILL after its grace period); `Stack.delete_topics()`
removes the plan's topics at the end of a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from kafka.admin import KafkaAdminClient

from ops.demo_env import StackPlan, stack_env

REPO = Path(__file__).resolve().parent.parent
CREATE_TOPICS = REPO / "deploy" / "local" / "create_topics.py"
STARTED = re.compile(r"\[ota up\] (\S+) started \(pid (\d+),")
# A member that joined while its topic's metadata was still missing can keep an empty
# assignment (kafka-python); restarting that service makes it join again.
REJOIN_AFTER_S = 30.0


class StackError(RuntimeError):
    """The stack did not come up; the message names what and where its log is."""


class Stack:
    def __init__(
        self,
        plan: StackPlan,
        *,
        scale: Mapping[str, int] | None = None,
        base_env: Mapping[str, str] | None = None,
        die_with_caller: bool = False,
    ) -> None:
        self.plan = plan
        self.scale = dict(scale or {})
        # Tests: a run killed before its teardown must not leave services writing to the
        # Redis db and topics the next run takes (the demo's --keep-running outlives it).
        self.die_with_caller = die_with_caller
        self.env = stack_env(plan, base_env)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def supervisor_log(self) -> Path:
        return self.plan.state_dir / "supervisor.log"

    def groups(self) -> dict[str, str]:
        """Consumer group -> the service it belongs to."""
        name = self.plan.name
        return {
            f"{name}-workers": "workers",
            f"{name}-gateway": "gateway",
            f"{name}-scheduler-registry": "scheduler",
            f"{name}-scheduler-jobs": "scheduler",
        }

    @property
    def bootstrap(self) -> str:
        return self.env.get("OTA_KAFKA_BOOTSTRAP") or "127.0.0.1:9092"

    # ------------------------------------------------------------ lifecycle

    def create_topics(self) -> None:
        insync = self.plan.min_insync_replicas
        done = subprocess.run(
            [
                sys.executable,
                str(CREATE_TOPICS),
                "--bootstrap",
                self.bootstrap,
                "--partitions",
                str(self.plan.partitions),
                "--prefix",
                self.plan.topic_prefix,
                "--replication-factor",
                str(self.plan.replicas),
                *([] if insync is None else ["--min-insync-replicas", str(insync)]),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(f"creating topics failed: {done.stderr.strip()}")

    def delete_topics(self) -> None:
        """Deletes the plan's topics (every topic under its prefix): the end of a run."""
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=f"{self.plan.name}-cleanup"
        )
        try:
            prefix = self.plan.topic_prefix
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)])
        finally:
            admin.close()

    def start(self, timeout_s: float = 90.0) -> None:
        self.plan.state_dir.mkdir(parents=True, exist_ok=True)
        self.create_topics()
        command = [sys.executable, "-m", "ops.supervisor", "--log-dir", str(self.plan.log_dir)]
        if self.scale:
            command += ["--scale", ",".join(f"{k}={v}" for k, v in self.scale.items())]
        self._log = self.supervisor_log.open("ab")
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_terminate_with_parent if self.die_with_caller else None,
        )
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 40.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGINT)  # the second signal kills at once
                self.process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ readiness

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        checks = [("scheduler API", self._api_up), ("edge port", self._edge_up)]
        checks += [(f"{n} metrics", self._metrics_up(u)) for n, u in self._metrics_urls().items()]
        for what, probe in checks:
            self._until(probe, what, deadline)
        self._wait_groups(deadline)

    def _until(self, probe: Any, what: str, deadline: float) -> None:
        while not probe():
            self._check_alive()
            if time.monotonic() > deadline:
                raise StackError(f"{what} not ready in time; see {self.plan.log_dir}")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise StackError(
                f"ota up exited with {self.process.returncode}; see {self.supervisor_log}"
            )

    def _api_up(self) -> bool:
        return _http_ok(f"{self.plan.api_url}/healthz")

    def _edge_up(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1.0)
            return s.connect_ex(("127.0.0.1", self.plan.ports.edge)) == 0

    def _metrics_urls(self) -> dict[str, str]:
        urls = self.plan.metrics_urls()
        out = {}
        for name, url in urls.items():
            count = self.scale.get(name, 1)
            if count == 1 or name not in ("workers", "gateway"):
                out[name] = url
                continue
            base, port = url.rsplit(":", 1)[0], int(url.rsplit(":", 1)[1].split("/")[0])
            for i in range(count):
                out[f"{name}-{i}"] = f"{base}:{port + i}/metrics"
        return out

    def metrics_urls(self) -> dict[str, str]:
        return self._metrics_urls()

    @staticmethod
    def _metrics_up(url: str) -> Any:
        return lambda: _http_ok(url)

    def _wait_groups(self, deadline: float) -> None:
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.plan.name}-ready",
        )
        try:
            restarted: set[str] = set()
            stuck_since: dict[str, float] = {}
            while True:
                waiting, stuck = self._unassigned(admin)
                if not waiting:
                    return
                self._check_alive()
                now = time.monotonic()
                if now > deadline:
                    raise StackError(f"consumer groups {sorted(waiting)} hold no partitions")
                for group in set(stuck_since) - stuck:
                    stuck_since.pop(group)
                for group in stuck:
                    service = self.groups()[group]
                    since = stuck_since.setdefault(group, now)
                    if now - since > REJOIN_AFTER_S and service not in restarted:
                        self.restart(service)
                        restarted.add(service)
                time.sleep(0.5)
        finally:
            admin.close()

    def watch(self, every_s: float = 5.0, grace_s: float = 20.0) -> None:
        """Keep every consumer group of the stack holding its partitions, in a thread.

        A kafka-python member that dropped out of its group under load (session timeout
        while the machine is saturated) may never join again while its process runs on:
        its partitions then go unread. The watch restarts such a service through the
        supervisor, as a liveness probe would, and says so on stdout.
        """

        def loop() -> None:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id=f"{self.plan.name}-watch",
            )
            bad_since: dict[str, float] = {}
            last_restart: dict[str, float] = {}
            try:
                while self.process is not None and self.process.poll() is None:
                    try:
                        waiting, _ = self._unassigned(admin)
                    except Exception:  # a slow broker: look again on the next round
                        waiting = set()
                    now = time.monotonic()
                    for group in set(bad_since) - waiting:
                        bad_since.pop(group)
                    for group in waiting:
                        service = self.groups()[group]
                        since = bad_since.setdefault(group, now)
                        if now - since > grace_s and now - last_restart.get(service, 0) > 60:
                            print(f"[ota stack] {group} holds no partitions: restarting {service}")
                            self.restart(service)
                            last_restart[service] = now
                            bad_since.pop(group)
                    time.sleep(every_s)
            finally:
                admin.close()

        threading.Thread(target=loop, name="group-watch", daemon=True).start()

    def _unassigned(self, admin: KafkaAdminClient) -> tuple[set[str], set[str]]:
        """Groups not fully assigned yet, and of those the ones that settled (Stable)
        with partitions nobody holds."""
        described = admin.describe_groups(list(self.groups()))
        waiting, stuck = set(), set()
        for group, info in described.items():
            members = info.get("members") or []
            held = sum(
                len(t["partitions"])
                for m in members
                for t in (m.get("member_assignment") or {}).get("assigned_partitions") or []
            )
            expected_members = self.scale.get(self.groups()[group], 1)
            stable = info.get("group_state") == "Stable"
            if not stable or held < self.plan.partitions or len(members) < expected_members:
                waiting.add(group)
                if stable and len(members) >= expected_members and held < self.plan.partitions:
                    stuck.add(group)
        return waiting, stuck

    def pids(self) -> dict[str, int]:
        """The current process of each service, from the supervisor's log."""
        found: dict[str, int] = {}
        if self.supervisor_log.exists():
            for match in STARTED.finditer(self.supervisor_log.read_text(errors="replace")):
                found[match.group(1)] = int(match.group(2))
        return found

    def restart(self, service: str) -> None:
        """Stop a service's processes; the supervisor starts them again."""
        for label, pid in self.pids().items():
            if label == service or label.startswith(f"{service}-"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent thread exits


def _terminate_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM once the caller is gone, however it died;
    ota up then stops its services as on any SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
