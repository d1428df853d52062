"""Download tokens: bound to one device and one package, expiring, rotatable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.settings import TokenKeys
from ota.tokens import Verdict, mint, verify

KEYS = TokenKeys.parse("k1:first-secret-0123456789,k2:second-secret-0123456789", None)
SHA = "cd" * 32
OTHER_SHA = "ef" * 32
NOW = 1_800_000_000


def token(
    device: str = "dev-1", sha: str = SHA, expires: int = NOW + 86400, keys: TokenKeys = KEYS
) -> str:
    return mint(keys, device_id=device, package_sha256=sha, expires_s=expires)


def test_a_fresh_token_is_valid_for_its_device_and_package() -> None:
    check = verify(KEYS, token(), package_sha256=SHA, now_s=NOW, device_id="dev-1")
    assert (check.verdict, check.device_id, check.expires_s) == (
        Verdict.VALID,
        "dev-1",
        NOW + 86400,
    )


def test_the_package_hash_is_case_insensitive() -> None:
    assert (
        verify(KEYS, token(sha=SHA.upper()), package_sha256=SHA, now_s=NOW).verdict is Verdict.VALID
    )


def test_another_package_or_device_is_wrong() -> None:
    assert verify(KEYS, token(), package_sha256=OTHER_SHA, now_s=NOW).verdict is Verdict.WRONG
    assert (
        verify(KEYS, token(), package_sha256=SHA, now_s=NOW, device_id="dev-2").verdict
        is Verdict.WRONG
    )


def test_expired_only_when_genuine() -> None:
    assert (
        verify(KEYS, token(expires=NOW), package_sha256=SHA, now_s=NOW).verdict is Verdict.EXPIRED
    )
    forged = token(expires=NOW - 1)[:-2] + "AA"
    assert verify(KEYS, forged, package_sha256=SHA, now_s=NOW).verdict is Verdict.WRONG


def test_a_changed_expiry_breaks_the_signature() -> None:
    parts = token(expires=NOW - 5).split(".")
    parts[2] = str(NOW + 10**6)
    assert verify(KEYS, ".".join(parts), package_sha256=SHA, now_s=NOW).verdict is Verdict.WRONG


def test_rotation_old_keys_still_verify_unknown_keys_do_not() -> None:
    rotated = TokenKeys.parse("k1:first-secret-0123456789,k2:second-secret-0123456789", "k2")
    old = token()
    assert old.split(".")[1] == "k1"
    assert verify(rotated, old, package_sha256=SHA, now_s=NOW).verdict is Verdict.VALID
    assert token(keys=rotated).split(".")[1] == "k2"
    retired = TokenKeys.parse("k2:second-secret-0123456789", None)
    assert verify(retired, old, package_sha256=SHA, now_s=NOW).verdict is Verdict.WRONG


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "v1",
        "v2.k1.1.ZGV2.AAAA",
        "v1.k1.notanumber.ZGV2." + "A" * 43,
        "v1.k1.1.ZGV2.short",
        "v1.k1.1..A" + "A" * 42,
        "v1.k1.1.ZGV2." + "A" * 43 + ".extra",
        "é" * 10,
        "v1.k1." + "9" * 13 + ".ZGV2." + "A" * 43,
        "x" * 5000,
    ],
)
def test_malformed_tokens_are_malformed(bad: str) -> None:
    assert verify(KEYS, bad, package_sha256=SHA, now_s=NOW).verdict is Verdict.MALFORMED


@given(st.text(max_size=300))
def test_arbitrary_text_is_never_valid(text: str) -> None:
    assert verify(KEYS, text, package_sha256=SHA, now_s=NOW).verdict is not Verdict.VALID


@given(device=st.text(min_size=1, max_size=64), expires=st.integers(0, 10**11))
def test_round_trip_property(device: str, expires: int) -> None:
    check = verify(
        KEYS, token(device=device, expires=expires), package_sha256=SHA, now_s=NOW, device_id=device
    )
    assert check.verdict is (Verdict.VALID if expires > NOW else Verdict.EXPIRED)
