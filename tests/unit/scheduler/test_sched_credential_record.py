"""A credential record on its topic and back (scheduler/credential_log.py), pure."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.credential_log import RECORD_FIELDS, UnreadableRecord, decode, encode

digits = st.integers(min_value=0, max_value=2**53).map(str)
records = st.fixed_dictionaries(
    {"on": st.sampled_from(["0", "1"]), "created_ms": digits},
    optional={"auth": st.sampled_from(["secret", "certificate", "any"]), "seq": digits},
).flatmap(
    lambda base: st.one_of(
        st.just(base),
        st.builds(lambda kid, box: {**base, "kid": kid, "box": box}, st.text(), st.text()),
    )
)


@given(records)
def test_a_record_comes_back_as_the_store_held_it(record: dict[str, str]) -> None:
    raw = encode(record)
    assert raw is not None
    assert decode("dev-1", raw) == record
    assert raw == encode(dict(reversed(list(record.items()))))  # one value per record


def test_a_record_gone_is_a_tombstone() -> None:
    assert encode(None) is None
    assert encode({}) is None


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "not a JSON object"),
        (b'{"on": "1", "secret": "in clear"}', "unknown fields ['secret']"),
        (b'{"on": 1}', "malformed values"),
        (b'{"on": "yes"}', "malformed values"),
        (b'{"on": "1", "kid": "k"}', "malformed values"),
        (b'{"on": "1", "seq": "-3"}', "malformed seq"),
    ],
)
def test_what_is_not_a_record_is_refused_by_name(raw: bytes, why: str) -> None:
    with pytest.raises(UnreadableRecord, match="dev-1") as refused:
        decode("dev-1", raw)
    assert why in str(refused.value)


def test_the_fields_are_the_stores() -> None:
    full = {field: "1" for field in RECORD_FIELDS}
    assert decode("dev-1", orjson.dumps(full)) == full
