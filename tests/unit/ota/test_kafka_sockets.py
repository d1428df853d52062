"""A connection attempt kafka-python fails leaves no socket open (ota/kafka_sockets.py)."""

from __future__ import annotations

import socket
import traceback

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.inet import create_connection
from kafka.net.selector import NetworkSelector

from ota.kafka_sockets import close_failed_sockets


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens on it: a connection is refused


def test_a_refused_connection_closes_its_socket() -> None:
    close_failed_sockets()
    close_failed_sockets()  # applying it twice changes nothing
    net = NetworkSelector()
    try:
        with pytest.raises(KafkaConnectionError, match="ECONNREFUSED") as refused:
            net.run(create_connection, net, "127.0.0.1", _unused_port())
    finally:
        net.close()
    # The error's traceback still holds the attempt's socket, as kafka-python left it.
    attempted = [
        frame.f_locals["sock"]
        for frame, _ in traceback.walk_tb(refused.value.__traceback__)
        if isinstance(frame.f_locals.get("sock"), socket.socket)
    ]
    assert attempted
    assert all(sock.fileno() == -1 for sock in attempted)  # closed
