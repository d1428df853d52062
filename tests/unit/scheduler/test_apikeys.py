"""Stored API keys' pure parts: the token's shape, the create request, scope implications."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.apikeys import digest, implied, parse_request, public, stored_id
from scheduler.errors import ValidationError
from scheduler.settings import Scope, parse_api_keys

KID = "0123456789abcdef0123456789abcdef"


def test_a_stored_key_names_its_id() -> None:
    assert stored_id(f"ota_{KID}_secret-part") == KID
    assert stored_id(f"ota_{KID}_") is None  # no secret
    assert stored_id(f"ota_{KID}-secret") is None
    assert stored_id(f"ota_{KID.upper()}_secret") is None
    assert stored_id("dev-write-key") is None


@given(st.text(max_size=80))
def test_any_token_parses_to_an_id_or_none(token: str) -> None:
    found = stored_id(token)
    assert found is None or (len(found) == 32 and token.startswith(f"ota_{found}_"))


def test_admin_implies_write_and_write_implies_read() -> None:
    assert implied({Scope.ADMIN}) == {Scope.ADMIN, Scope.WRITE, Scope.READ}
    assert implied({Scope.WRITE}) == {Scope.WRITE, Scope.READ}
    assert implied({Scope.READ}) == {Scope.READ}
    assert parse_api_keys("bootstrap-admin:admin")["bootstrap-admin"] == implied({Scope.ADMIN})


def test_a_valid_request_gives_name_and_scopes() -> None:
    assert parse_request({"name": " ci ", "scopes": ["write"]}) == ("ci", implied({Scope.WRITE}))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["broker"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x"}, "scopes"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "tab\there", "scopes": ["read"]}, "name"),
        ({"name": "x" * 65, "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "key": "chosen"}, "key"),
        ([], None),
    ],
)
def test_a_bad_request_names_its_field(body: Any, field: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_request(body)
    assert caught.value.field == field


def test_the_public_view_never_shows_the_hash() -> None:
    token = f"ota_{KID}_s"
    doc = {"id": KID, "name": "n", "scopes": ["read"], "created_ms": 1, "sha256": digest(token)}
    shown = public(doc)
    assert digest(token) not in str(shown)
    assert shown["key_id"] == "sha256:" + digest(token)[:12]
