"""Fixtures shared by the integration suites of several services."""

from __future__ import annotations

import threading

import pytest
from kafka.producer.sender import Sender

from tests.redis_cluster_kit import redis_cluster


@pytest.fixture
def wakeups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that really woke a kafka-python sender, in order."""
    woken: list[str] = []
    wakeup = Sender.wakeup

    def counting(sender: Sender) -> None:
        woken.append(threading.current_thread().name)
        wakeup(sender)

    monkeypatch.setattr(Sender, "wakeup", counting)
    return woken


__all__ = ["redis_cluster", "wakeups"]
