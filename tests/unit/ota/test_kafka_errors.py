"""The Kafka transport's one error tree (ota/kafka_errors.py): both clients' errors become
KafkaClientErrors with the client's name and whether trying again may work, librdkafka's
fatal errors are told apart, and librdkafka's errors are logged by one function."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError as LibrdkafkaError
from confluent_kafka import KafkaException
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from ota.kafka_errors import (
    FlushTimeoutError,
    KafkaClientError,
    from_confluent,
    is_fatal,
    log_client_error,
    translate,
    worth_retrying,
)


def test_a_kafka_client_error_is_a_kafka_python_error_that_prints_its_message() -> None:
    error = KafkaClientError("QueueFull: full", retriable=True, name="QueueFull")
    assert isinstance(error, KafkaError)  # what "Kafka unavailable" handlers catch
    assert (str(error), error.name, error.retriable) == ("QueueFull: full", "QueueFull", True)
    flush = FlushTimeoutError("3 records unacknowledged")
    assert isinstance(flush, KafkaClientError)
    assert (flush.name, flush.retriable) == ("KafkaTimeoutError", True)


@pytest.mark.parametrize(
    ("error", "name", "retriable"),
    [
        (KafkaTimeoutError("no metadata"), "KafkaTimeoutError", True),  # not flagged, passes
        (MessageSizeTooLargeError("50000 bytes"), "MessageSizeTooLargeError", False),
        (ValueError("bad topic"), "ValueError", False),
    ],
)
def test_kafka_python_errors_are_translated_with_their_name(
    error: BaseException, name: str, retriable: bool
) -> None:
    translated = translate(error)
    assert (translated.name, translated.retriable) == (name, retriable)
    assert str(translated).startswith(f"{name}: ")
    assert worth_retrying(error) is retriable
    assert translate(translated) is translated


@pytest.mark.parametrize(
    ("code", "retriable"),
    [
        (LibrdkafkaError._MSG_TIMED_OUT, True),  # waited for a Kafka that was away
        (LibrdkafkaError.NOT_COORDINATOR, True),  # a coordinator moving
        (LibrdkafkaError.MSG_SIZE_TOO_LARGE, False),
    ],
)
def test_librdkafka_errors_bare_or_carried_become_the_same_client_error(
    code: int, retriable: bool
) -> None:
    bare = LibrdkafkaError(code)
    for error in (bare, KafkaException(bare)):
        translated = from_confluent(error)
        assert (translated.name, translated.retriable) == (bare.name(), retriable)
        assert str(translated) == f"{bare.name()}: {bare.str()}"
        assert worth_retrying(translated) is retriable


def test_anything_else_from_librdkafka_is_refused_for_good() -> None:
    translated = from_confluent(TypeError("value must be bytes"))
    assert (translated.name, translated.retriable) == ("Invalid", False)
    assert "value must be bytes" in str(translated)


def test_fatal_errors_are_the_flagged_ones_and_a_fenced_static_member() -> None:
    assert is_fatal(LibrdkafkaError(LibrdkafkaError._FATAL))
    assert is_fatal(LibrdkafkaError(LibrdkafkaError.FENCED_INSTANCE_ID))
    assert is_fatal(LibrdkafkaError(LibrdkafkaError._TRANSPORT, fatal=True))
    assert not is_fatal(LibrdkafkaError(LibrdkafkaError._TRANSPORT))


def test_a_client_error_is_logged_as_a_warning_and_a_fatal_one_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="ota.kafka_errors")
    log_client_error(LibrdkafkaError(LibrdkafkaError._ALL_BROKERS_DOWN))
    log_client_error(LibrdkafkaError(LibrdkafkaError.FENCED_INSTANCE_ID))
    assert [(r.levelno, r.getMessage(), r.code) for r in caplog.records] == [  # type: ignore[attr-defined]
        (logging.WARNING, "kafka client error", "_ALL_BROKERS_DOWN"),
        (logging.ERROR, "kafka client error", "FENCED_INSTANCE_ID"),
    ]
