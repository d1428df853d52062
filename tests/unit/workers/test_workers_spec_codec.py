"""A job spec survives being stored: what a worker reads back from Redis (after a restart
or a rebalance) builds the same upgrade command, signature fields included."""

from __future__ import annotations

import dataclasses

import orjson

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
