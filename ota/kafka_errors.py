"""The Kafka transport's errors, the same whichever client runs it (OTA_KAFKA_CLIENT).

    kafka.errors.KafkaError       kafka-python's base, which "Kafka unavailable" handlers
    |                             catch (the scheduler's API and console, retry loops)
    +-- KafkaClientError          a call or record Kafka (or the client) refused; `retriable`
        |                         says whether doing it again may work, `name` is the
        |                         client's error name (dead-letter reasons, logs, metrics)
        +-- FlushTimeoutError     `flush` returned with records unacknowledged
    RuntimeError
    +-- FatalConsumerError        the consumer can never read again: the service exits

The adapters (ota/kafka_producer.py, ota/kafka_consumer.py) translate at the edge with
`raise ... from exc`: `translate` for kafka-python's errors, `from_confluent` for
librdkafka's. A kafka-python delivery fails with kafka-python's own error (wrapping each
would cost every record a callback); `worth_retrying` answers for any of them.
`log_client_error` is the one log line for an error librdkafka reports on its own.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaError

log = logging.getLogger(__name__)

# kafka-python errors a later attempt gets past although it does not flag them retriable.
_PASSING_KAFKA_PYTHON = frozenset(
    {"KafkaTimeoutError", "NoBrokersAvailable", "KafkaConnectionError"}
)
# librdkafka errors of a Kafka away or slow (a record that timed out waited for it) or of
# a coordinator moving, which pass; librdkafka does not flag all of them retriable.
_PASSING_LIBRDKAFKA = frozenset(
    {
        "_MSG_TIMED_OUT",
        "_TIMED_OUT",
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "_WAIT_COORD",
        "NOT_COORDINATOR",
        "COORDINATOR_NOT_AVAILABLE",
        "COORDINATOR_LOAD_IN_PROGRESS",
    }
)
# librdkafka errors after which a consumer never reads again: its fatal error, and a
# static member fenced by a newer one with its group.instance.id (not always flagged fatal).
_FATAL_LIBRDKAFKA = frozenset({"_FATAL", "FENCED_INSTANCE_ID"})


class KafkaClientError(KafkaError):  # type: ignore[misc]
    """Kafka did not take a call or a record; `retriable` says whether trying again may work."""

    def __init__(self, message: str, *, retriable: bool, name: str = "KafkaError") -> None:
        super().__init__(message)
        self.retriable = retriable
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class FlushTimeoutError(KafkaClientError):
    """`flush` returned with records still unacknowledged."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True, name="KafkaTimeoutError")


class FatalConsumerError(RuntimeError):
    """The client can no longer consume (librdkafka's fatal error). Not a KafkaError on
    purpose: no retry loop catches it, so the service stops loudly and is restarted with
    a new consumer instead of polling a dead one forever."""


def translate(exc: BaseException) -> KafkaClientError:
    """A kafka-python error (or any other) as a KafkaClientError, itself if it is one."""
    if isinstance(exc, KafkaClientError):
        return exc
    name = type(exc).__name__
    retriable = bool(getattr(exc, "retriable", False)) or name in _PASSING_KAFKA_PYTHON
    return KafkaClientError(f"{name}: {exc}", retriable=retriable, name=name)


def worth_retrying(error: BaseException) -> bool:
    """Whether sending a record again may work (a delivery timeout: Kafka was away)."""
    return translate(error).retriable


def carried_error(exc: BaseException) -> Any:
    """The librdkafka KafkaError a confluent_kafka KafkaException carries, or None."""
    args = getattr(exc, "args", ())
    return args[0] if args and hasattr(args[0], "retriable") else None


def from_confluent(error: Any) -> KafkaClientError:
    """A librdkafka error (a confluent_kafka KafkaError, or a KafkaException carrying one)
    as a KafkaClientError; anything else (a TypeError of a bad argument) is refused for
    good as "Invalid"."""
    if isinstance(error, KafkaClientError):
        return error
    inner = error if hasattr(error, "retriable") else carried_error(error)
    if inner is None:
        return KafkaClientError(f"{type(error).__name__}: {error}", retriable=False, name="Invalid")
    name = str(inner.name())
    retriable = bool(inner.retriable()) or name in _PASSING_LIBRDKAFKA
    return KafkaClientError(f"{name}: {inner.str()}", retriable=retriable, name=name)


def is_fatal(error: Any) -> bool:
    """Whether a librdkafka error ends its client for good."""
    return bool(error.fatal()) or error.name() in _FATAL_LIBRDKAFKA


def log_client_error(error: Any) -> None:
    """The log line of a librdkafka error: its error callback's (a Kafka away, which it
    rides out by itself, is a warning) and a consumer's. A fatal error is an error: a
    producer's records fail with it (callers see them), a consumer raises
    FatalConsumerError from its next call."""
    level = logging.ERROR if is_fatal(error) else logging.WARNING
    log.log(level, "kafka client error", extra={"error": error.str(), "code": error.name()})
