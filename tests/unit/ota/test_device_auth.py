"""IoTDA device authentication: client id parsing, the HMAC password, every reason code."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ota.device_auth import (
    HOUR_MS,
    MalformedClientId,
    PresentedCertificate,
    Reason,
    SignType,
    authenticate,
    credentials_for,
    decide_certificate,
    parse_client_id,
    password_for,
    timestamp_for,
)

# 2026-11-27 12:34:56 UTC
NOW = 1_795_782_896_000
STAMP = "2026112712"
SECRET = "s3cret-Device-Key_01"


def sdk_password(secret: str, stamp: str) -> str:
    """What Huawei's Python SDK computes (iot_device_sdk_python's hmac_sha256)."""
    return hmac.new(stamp.encode(), secret.encode(), hashlib.sha256).hexdigest()


def test_timestamp_is_the_utc_hour() -> None:
    assert timestamp_for(NOW) == STAMP


def test_password_matches_the_sdk() -> None:
    assert password_for(SECRET, STAMP) == sdk_password(SECRET, STAMP)
    assert password_for(SECRET, STAMP) == password_for(SECRET, STAMP).lower()


def test_credentials_for_a_device() -> None:
    c = credentials_for("prod_dev_1", SECRET, NOW)
    assert c.client_id == f"prod_dev_1_0_1_{STAMP}"
    assert c.username == "prod_dev_1"
    assert c.password == sdk_password(SECRET, STAMP)
    assert credentials_for("d", SECRET, NOW, SignType.NO_TIME_CHECK).client_id == f"d_0_0_{STAMP}"


def test_device_ids_with_underscores_parse_from_the_right() -> None:
    parsed = parse_client_id("a_0_1_b_0_1_2026112712")
    assert (parsed.device_id, parsed.sign_type, parsed.timestamp) == (
        "a_0_1_b",
        SignType.TIME_CHECK,
        "2026112712",
    )
    assert parsed.hour == NOW // HOUR_MS


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        "dev",
        "dev_0_1",
        "_0_1_2026112712",  # no device id
        "dev_1_1_2026112712",  # the id type must be 0
        "dev_0_2_2026112712",  # sign type 0 or 1 only
        "dev_0__2026112712",
        "dev_0_1_202611271",  # 9 digits
        "dev_0_1_20261127123",  # 11 digits
        "dev_0_1_2026113112",  # 31 November
        "dev_0_1_2026112724",  # hour 24
        "dev_0_1_2026111a12",
        "dev_0_1_" + "\uff12" * 10,  # full-width digits are digits to str.isdigit
        "d" * 250 + "_0_1_2026112712",
    ],
)
def test_malformed_client_ids(client_id: str) -> None:
    with pytest.raises(MalformedClientId):
        parse_client_id(client_id)
    decision = authenticate(client_id, "dev", "x", SECRET, True, NOW)
    assert (decision.reason, decision.device_id, decision.allowed) == (
        Reason.MALFORMED_CLIENT_ID,
        None,
        False,
    )


def check(
    client_id: str | None = None,
    username: str = "dev-1",
    password: str | None = None,
    secret: str | None = SECRET,
    enabled: bool = True,
    now_ms: int = NOW,
) -> Reason:
    c = credentials_for("dev-1", SECRET, NOW)
    return authenticate(
        c.client_id if client_id is None else client_id,
        username,
        c.password if password is None else password,
        secret,
        enabled,
        now_ms,
    ).reason


def test_every_reason() -> None:
    assert check() is Reason.OK
    assert check(username="dev-2") is Reason.USERNAME_MISMATCH
    assert check(secret=None) is Reason.UNKNOWN_DEVICE
    assert check(enabled=False) is Reason.DISABLED
    assert check(password="0" * 64) is Reason.BAD_PASSWORD
    assert check(password="") is Reason.BAD_PASSWORD
    assert check(password="é" * 64) is Reason.BAD_PASSWORD
    assert check(password=password_for(SECRET, STAMP).upper()) is Reason.BAD_PASSWORD
    assert check(secret="another-secret") is Reason.BAD_PASSWORD
    assert check(client_id="dev-1_0_1_20261127") is Reason.MALFORMED_CLIENT_ID
    assert {r.value for r in Reason} == {
        "ok",
        "malformed_client_id",
        "unknown_device",
        "bad_password",
        "disabled",
        "clock_skew",
        "username_mismatch",
        # Certificate devices: decide_certificate's, never `decide`'s.
        "certificate_required",
        "certificate_mismatch",
        "certificate_untrusted",
        "certificate_expired",
    }


def test_sign_type_1_allows_the_hour_before_and_after() -> None:
    assert check(now_ms=NOW + HOUR_MS) is Reason.OK
    assert check(now_ms=NOW - HOUR_MS) is Reason.OK
    start_of_hour = NOW - NOW % HOUR_MS
    assert check(now_ms=start_of_hour + 2 * HOUR_MS - 1) is Reason.OK
    assert check(now_ms=start_of_hour + 2 * HOUR_MS) is Reason.CLOCK_SKEW
    assert check(now_ms=start_of_hour - HOUR_MS - 1) is Reason.CLOCK_SKEW
    assert check(now_ms=NOW + 48 * HOUR_MS) is Reason.CLOCK_SKEW


def test_sign_type_0_never_checks_the_hour() -> None:
    c = credentials_for("dev-1", SECRET, NOW, SignType.NO_TIME_CHECK)
    assert check(c.client_id, now_ms=NOW + 1000 * HOUR_MS) is Reason.OK


def test_the_password_is_bound_to_the_stamped_hour() -> None:
    old = credentials_for("dev-1", SECRET, NOW - HOUR_MS)
    # The client id says 11:00 but the password was made for 12:00.
    assert check(client_id=old.client_id) is Reason.BAD_PASSWORD


device_ids = st.from_regex(r"[A-Za-z0-9_\-.:@]{1,128}", fullmatch=True)
secrets_ = st.text(min_size=1, max_size=64)
# Whole minutes from 1970 to about the year 6700.
times = st.integers(min_value=0, max_value=2_534_023_007).map(lambda m: m * 60_000)


@given(device_ids, secrets_, times, st.sampled_from(list(SignType)))
def test_round_trip(device_id: str, secret: str, now_ms: int, sign_type: SignType) -> None:
    c = credentials_for(device_id, secret, now_ms, sign_type)
    decision = authenticate(c.client_id, c.username, c.password, secret, True, now_ms)
    assert (decision.reason, decision.device_id) == (Reason.OK, device_id)


@given(device_ids, secrets_, times, st.data())
def test_any_changed_byte_fails(
    device_id: str, secret: str, now_ms: int, data: st.DataObject
) -> None:
    c = credentials_for(device_id, secret, now_ms)
    which = data.draw(st.sampled_from(["client_id", "username", "password"]))
    value: str = getattr(c, which)
    i = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    # The sign type is not signed (as in IoTDA): see test_the_sign_type_is_not_signed.
    assume(not (which == "client_id" and i == len(value) - 12))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda ch: ch != value[i]))
    changed = {**{k: getattr(c, k) for k in ("client_id", "username", "password")}}
    changed[which] = value[:i] + replacement + value[i + 1 :]
    decision = authenticate(
        changed["client_id"], changed["username"], changed["password"], secret, True, now_ms
    )
    assert not decision.allowed


def test_the_sign_type_is_not_signed() -> None:
    # IoTDA's HMAC covers the hour only, so a device may always opt out of the hour check.
    c = credentials_for("dev-1", SECRET, NOW)
    unchecked = c.client_id.replace("_0_1_", "_0_0_")
    assert check(client_id=unchecked, now_ms=NOW + 100 * HOUR_MS) is Reason.OK


@given(st.text(max_size=300), st.text(max_size=150), st.text(max_size=80))
def test_arbitrary_input_never_raises(client_id: str, username: str, password: str) -> None:
    decision = authenticate(client_id, username, password, SECRET, True, NOW)
    assert decision.reason in set(Reason)


@pytest.mark.parametrize(
    ("certificate", "enabled", "expected"),
    [
        (PresentedCertificate(("dev-1",)), True, Reason.OK),
        (PresentedCertificate(("unit 7", "unit-7.example", "dev-1")), True, Reason.OK),
        (PresentedCertificate(("dev-2",)), True, Reason.CERTIFICATE_MISMATCH),
        (PresentedCertificate(("dev-1x", "DEV-1")), True, Reason.CERTIFICATE_MISMATCH),
        (PresentedCertificate(()), True, Reason.CERTIFICATE_MISMATCH),
        (None, True, Reason.CERTIFICATE_REQUIRED),
        # The broker's verdict on the chain stands, whatever the names.
        (
            PresentedCertificate(("dev-1",), Reason.CERTIFICATE_UNTRUSTED),
            True,
            Reason.CERTIFICATE_UNTRUSTED,
        ),
        (
            PresentedCertificate(("dev-1",), Reason.CERTIFICATE_EXPIRED),
            True,
            Reason.CERTIFICATE_EXPIRED,
        ),
        # Disabled first, as for a password device.
        (PresentedCertificate(("dev-1",)), False, Reason.DISABLED),
        (None, False, Reason.DISABLED),
    ],
)
def test_a_certificate_decides_as_the_brokers_redis_mode_does(
    certificate: PresentedCertificate | None, enabled: bool, expected: Reason
) -> None:
    decision = decide_certificate("dev-1", certificate, enabled)
    assert decision.reason is expected
    assert decision.device_id == "dev-1"
