"""kafka-python 3.0.12 leaves the socket of a failed connection attempt open.

`KafkaNetSocket.sock_connect` raises (connection refused, unreachable, timed out) without
closing the socket it was given, and the error's traceback keeps that socket alive: one
file descriptor per attempt while Kafka is down (every client retries within
RECONNECT_BACKOFF_MAX_MS, ota/kafka_clients.py), held until the garbage collector frees
the cycle, or for as long as anything keeps the error (a log handler keeping records,
as pytest's does). `close_failed_sockets()` makes a failed attempt close its socket;
ota/kafka_clients.py applies it once at import (kafka-python is pinned exactly, so a new
version is checked against this before it is used).
"""

from __future__ import annotations

import socket
from typing import Any

from kafka.net.inet import KafkaNetSocket

_original = KafkaNetSocket.sock_connect


async def _closing_sock_connect(
    self: KafkaNetSocket,
    net: Any,
    sock: socket.socket,
    sockaddr: Any,
    timeout_at: float | None = None,
) -> socket.socket:
    try:
        connected: socket.socket = await _original(self, net, sock, sockaddr, timeout_at=timeout_at)
    except BaseException:
        sock.close()  # the caller drops it and tries the next address or reports the error
        raise
    return connected


def close_failed_sockets() -> None:
    """Make kafka-python close the socket of a connection attempt that failed (idempotent)."""
    KafkaNetSocket.sock_connect = _closing_sock_connect
