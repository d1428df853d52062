"""The control plane's device authentication, as a small HTTP server in the test process.

Implements the broker's contract (docs/broker.md): `POST /v1/broker/authenticate` with
`Authorization: Bearer <key>` and `{"clientid", "username", "password", "peerhost"}`;
answers 200 `{"result": "allow"|"deny", "is_superuser": false, "reason", "device_id"}`.
Credentials are IoTDA's: client id `{device_id}_0_{sign_type}_{yyyyMMddHH}`, user name =
device id, password = hex HMAC-SHA256 keyed by the hour string over the secret.
`mode` makes it fail on purpose: "down" answers 503, "slow" answers after the broker gave up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/v1/broker/authenticate"
CLIENT_ID = re.compile(r"^(?P<device>.+)_0_(?P<sign>[01])_(?P<hour>\d{10})$")


def iotda_hour(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d%H")


def iotda_password(secret: str, hour: str) -> str:
    return hmac.new(hour.encode(), secret.encode(), hashlib.sha256).hexdigest()


@dataclass
class Device:
    secret: str
    disabled: bool = False


@dataclass
class AuthState:
    key: str
    devices: dict[str, Device] = field(default_factory=dict)
    mode: str = "normal"  # normal | down | slow
    slow_s: float = 3.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def decide(state: AuthState, body: dict[str, Any]) -> dict[str, Any]:
    def deny(reason: str) -> dict[str, Any]:
        return {"result": "deny", "is_superuser": False, "reason": reason}

    match = CLIENT_ID.match(str(body.get("clientid", "")))
    if match is None:
        return deny("malformed_client_id")
    device_id = match["device"]
    if body.get("username") != device_id:
        return deny("username_mismatch")
    device = state.devices.get(device_id)
    if device is None:
        return deny("unknown_device")
    expected = iotda_password(device.secret, match["hour"])
    if not hmac.compare_digest(expected, str(body.get("password", ""))):
        return deny("bad_password")
    if device.disabled:
        return deny("disabled")
    return {"result": "allow", "is_superuser": False, "reason": "ok", "device_id": device_id}


class AuthServer:
    """Serves on 127.0.0.1 on a free port in a thread, until `close()`."""

    def __init__(self, key: str) -> None:
        self.state = AuthState(key=key)
        self._release = threading.Event()
        state, release = self.state, self._release

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the broker reuses its connections

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the broker logs the outcome

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    state.requests.append(body)
                    mode = state.mode
                if mode == "slow":
                    release.wait(state.slow_s)
                if self.path != PATH or self.headers.get("Authorization") != f"Bearer {state.key}":
                    self._reply(401, {"error": "bad key"})
                elif mode == "down":
                    self._reply(503, {"error": "unavailable"})
                else:
                    self._reply(200, decide(state, body))

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # a burst of connects opens many connections at once

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def add_device(self, device_id: str, secret: str, disabled: bool = False) -> None:
        with self.state.lock:
            self.state.devices[device_id] = Device(secret, disabled)

    def set_mode(self, mode: str) -> None:
        with self.state.lock:
            self.state.mode = mode

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
