"""The broker's authentication request: EMQX's fields, and a client certificate's facts."""

from __future__ import annotations

from typing import Any

import pytest

from ota.device_auth import PresentedCertificate, Reason
from scheduler.broker_request import AuthRequest, parse
from scheduler.errors import ValidationError

BASE = {
    "clientid": "dev-1_0_0_2026120512",
    "username": "dev-1",
    "password": "",
    "peerhost": "10.0.0.7",
}


def test_emqxs_four_fields_without_a_certificate() -> None:
    assert parse(BASE) == AuthRequest("dev-1_0_0_2026120512", "dev-1", "", "10.0.0.7", None)
    nulls = parse({**BASE, "username": None, "password": None, "peerhost": None})
    assert (nulls.username, nulls.password, nulls.peerhost) == ("", "", "")


def test_the_project_brokers_certificate_facts() -> None:
    asked = parse(
        {
            **BASE,
            "cert_common_name": "unit 7",
            "cert_subject": "CN=unit 7,O=Fleet",
            "cert_names": ["unit 7", "unit-7.example", "dev-1"],
            "cert_fingerprint": "ab" * 32,
            "cert_check": "certificate_expired",
        }
    )
    assert asked.certificate == PresentedCertificate(
        ("unit 7", "unit-7.example", "dev-1"), Reason.CERTIFICATE_EXPIRED, "ab" * 32
    )


def test_emqxs_placeholders_alone_name_the_common_name_and_a_verified_chain() -> None:
    """EMQX sends no SANs and no verdict: its listener verified the chain (verify_peer)."""
    asked = parse({**BASE, "cert_common_name": "dev-1", "cert_subject": "CN=dev-1"})
    assert asked.certificate == PresentedCertificate(("dev-1",), Reason.OK, "")
    no_cn = parse({**BASE, "cert_common_name": "", "cert_subject": "O=Fleet"})
    assert no_cn.certificate == PresentedCertificate((), Reason.OK, "")


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"cert_common_name": "", "cert_subject": "", "cert_names": []},
        {"cert_common_name": None, "cert_subject": None, "cert_names": None},
        {"cert_check": "ok", "cert_fingerprint": "ab" * 32},  # nothing named: no certificate
    ],
)
def test_empty_certificate_fields_are_no_certificate(extra: dict[str, Any]) -> None:
    assert parse({**BASE, **extra}).certificate is None


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ([], "wrong_type", None),
        ({"clientid": "a_0_0_2026120512", "username": "a"}, "missing_field", "password"),
        ({**BASE, "password": 7}, "wrong_type", "password"),
        ({**BASE, "cert_common_name": ["dev-1"]}, "wrong_type", "cert_common_name"),
        ({**BASE, "cert_names": "dev-1"}, "wrong_type", "cert_names"),
        ({**BASE, "cert_names": ["dev-1", 7]}, "wrong_type", "cert_names"),
        (
            {**BASE, "cert_common_name": "dev-1", "cert_check": "maybe"},
            "bad_cert_check",
            "cert_check",
        ),
        (
            {**BASE, "cert_common_name": "dev-1", "cert_check": "certificate_mismatch"},
            "bad_cert_check",
            "cert_check",
        ),
    ],
)
def test_a_bad_field_is_named(body: Any, code: str, field: str | None) -> None:
    with pytest.raises(ValidationError) as raised:
        parse(body)
    assert raised.value.code == code
    assert raised.value.field == field
