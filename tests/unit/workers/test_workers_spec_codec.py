"""A job spec survives being stored: what a worker reads back from Redis (after a restart
or a rebalance) builds the same upgrade command, signature fields included, and makes the
same retry decisions; a spec stored before a field existed reads back as it was."""

from __future__ import annotations

import dataclasses
from hashlib import blake2b

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ota.catalog import FailureCause
from ota.records import MAX_RETRY_DELAY_S, RetryRule
from ota.retry_rules import RULE_NAMES, retry_after_s
from tests.unit.workers.helpers import spec
from workers.codec import spec_ref, unpack_spec


def test_a_signed_package_keeps_its_signature_and_key_id() -> None:
    plain = spec("t-signed")
    signed = dataclasses.replace(
        plain, package=dataclasses.replace(plain.package, signature="c2ln", key_id="0123abcd")
    )
    ref = spec_ref(signed)
    assert unpack_spec(ref.digest, ref.packed) == signed
    assert spec_ref(plain).digest != ref.digest  # the signature is part of what is stored


def test_a_spec_stored_before_signatures_reads_back_unsigned() -> None:
    plain = spec("t-unsigned")
    packed = spec_ref(plain).packed
    assert len(orjson.loads(packed)) == 12  # an unsigned spec is stored as it always was
    assert unpack_spec(spec_ref(plain).digest, packed).package.signature == ""


RULES = st.builds(
    RetryRule,
    on=st.sampled_from(sorted(RULE_NAMES)),
    count=st.integers(0, 5),
    interval_s=st.integers(0, 86_400),
    factor=st.floats(1.0, 10.0),
    max_interval_s=st.integers(0, MAX_RETRY_DELAY_S),
)


@given(st.lists(RULES, min_size=1, max_size=6), st.booleans())
def test_retry_rules_survive_being_stored(rules: list[RetryRule], signed: bool) -> None:
    plain = spec("t-rules")
    package = dataclasses.replace(plain.package, signature="c2ln", key_id="0123abcd")
    with_rules = dataclasses.replace(
        plain, retry_rules=tuple(rules), package=package if signed else plain.package
    )
    ref = spec_ref(with_rules)
    assert unpack_spec(ref.digest, ref.packed) == with_rules
    assert ref.digest != spec_ref(dataclasses.replace(with_rules, retry_rules=())).digest


# A spec as a worker stored it before retry rules existed (retry_count 2, 60 s apart).
STORED_BEFORE_RULES = orjson.dumps(
    ["t-old", "f", "ab" * 32, "2.0", "fw.bin", 1234, "", [], 0, 2, 60, 0]
)


def test_a_spec_stored_before_retry_rules_reads_back_and_decides_as_then() -> None:
    digest = blake2b(STORED_BEFORE_RULES, digest_size=8).hexdigest()
    old = unpack_spec(digest, STORED_BEFORE_RULES)
    assert old.retry_rules == ()
    assert (old.retry_count, old.retry_interval_s) == (2, 60)
    assert spec_ref(old).packed == STORED_BEFORE_RULES  # packed again, it is the same entry
    assert retry_after_s(old, FailureCause.LOW_BATTERY, 1) == 60
    assert retry_after_s(old, FailureCause.LOW_BATTERY, 2) is None
    assert retry_after_s(old, FailureCause.NOT_ENOUGH_STORAGE, 0) is None
