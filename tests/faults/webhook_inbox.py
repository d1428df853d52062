"""A webhook receiver for fault runs: a loopback HTTP server that keeps every delivery.

It answers 204 to every POST and keeps the JSON bodies, so a run can count what an
application would have been told twice: the same notification again (the same `id`, which
a receiver deduplicates), or one device result under two ids (which it cannot).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ops.demo_env import free_port

SECRET = "fault-webhook-secret-0123456789"


@dataclass(frozen=True)
class WebhookRepeats:
    same_id: int  # deliveries of a notification already delivered
    new_id: int  # device results delivered again under another id


class WebhookInbox:
    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port  # a port: one stopped before
        self.bodies: list[dict[str, Any]] = []
        self._told: set[str] = set()  # devices a device result was delivered for
        self._lock = threading.Lock()
        self._delivered = threading.Condition(self._lock)
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                note = json.loads(body)
                with inbox._delivered:
                    inbox.bodies.append(note)
                    if note.get("kind") == "device_result":
                        inbox._told.add(note["device_id"])
                    inbox._delivered.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per delivery would drown the run's output

        class Server(ThreadingHTTPServer):
            # The dispatcher opens up to 64 connections at once; the stdlib's backlog of 5
            # would refuse some, and each refused delivery waits out its retry backoff.
            request_queue_size = 1024

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def device_results(self) -> set[str]:
        """The devices some device result was delivered for."""
        with self._lock:
            return set(self._told)

    def wait_for(self, devices: set[str], timeout_s: float) -> bool:
        """Block until a result was delivered for every one of `devices`, or time out."""
        with self._delivered:
            # The count first: the subset check runs only once it can be true.
            return self._delivered.wait_for(
                lambda: len(self._told) >= len(devices) and devices <= self._told, timeout_s
            )

    def repeats(self) -> WebhookRepeats:
        with self._lock:
            results = [b for b in self.bodies if b.get("kind") == "device_result"]
        ids = Counter(b["id"] for b in results)
        per_result: dict[tuple[str, str, int, str], set[str]] = {}
        for b in results:
            key = (b["task_id"], b["device_id"], b["attempt"], b["state"])
            per_result.setdefault(key, set()).add(b["id"])
        return WebhookRepeats(
            same_id=sum(n - 1 for n in ids.values()),
            new_id=sum(len(v) - 1 for v in per_result.values()),
        )
