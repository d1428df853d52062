"""The control plane's device authentication, served from the test process: the scheduler's
own `POST /v1/broker/authenticate` (its handler behind its own key check, with one
broker-scoped key) on the real `Credentials` of a Redis database, in a uvicorn server on a
thread of its own. The Redis client is used only from that thread's event loop, and closed
there when the server stops.

A private http-mode broker pointed here is decided by the scheduler's code, not a stand-in
(authserver.py is the stand-in, for failure modes the real endpoint cannot be made to show).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Generator
from types import SimpleNamespace
from typing import cast

import redis.asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from scheduler.api import credential_routes
from scheduler.api.app import guard
from scheduler.apikeys import ApiKeys
from scheduler.bus import Producer
from scheduler.credentials import Credentials
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, CredentialKeys, SecretBox
from scheduler.settings import Scope

PATH = "/v1/broker/authenticate"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the test process's signals are pytest's


class ControlPlane:
    """Serves on 127.0.0.1 on a free port until `close()`."""

    def __init__(self, redis_url: str, key: str) -> None:
        client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(redis_url)
        box = SecretBox(CredentialKeys.parse(DEV_CREDENTIAL_KEYS))
        # Configured keys are checked in memory; the producer and Redis serve stored keys,
        # which this server has none of.
        keys = ApiKeys(client, cast(Producer, None), "", {key: frozenset({Scope.BROKER})})
        (endpoint,) = [e for e in credential_routes.endpoints() if e.path == PATH]

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            yield
            await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose

        app = Starlette(
            routes=[Route(PATH, guard(endpoint, keys), methods=["POST"])], lifespan=lifespan
        )
        app.state.services = SimpleNamespace(credentials=Credentials(client, box, []))
        # Listening before the thread starts: the broker's first call waits in the backlog.
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self._server = _Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", loop="asyncio")
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}{PATH}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
