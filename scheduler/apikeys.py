"""API keys: who a bearer token is, and the stored keys operators create and revoke.

Two kinds of key authenticate, both compared in constant time:
- configured keys, `OTA_API_KEYS` (`key:scope[+scope]`): the bootstrap, and the keys of
  tools deployed with the scheduler (the broker's);
- stored keys, made by `POST /v1/keys` (admin scope): `ota_<id>_<secret>`, a 32-hex id
  and 256 random bits. Only the SHA-256 of the key is kept, with its id, name, scopes and
  creation time: Kafka's compacted `ota.api-keys` topic (key = id) is the record, the
  Redis hash `keys.API_KEYS` the view every request reads (scheduler/rebuild.py restores
  it). A revocation writes a tombstone to the topic, then deletes the hash field: the key
  is refused from the next request on, by every replica.

The key is returned once, by `create`; nothing can show it again. A high-entropy key needs
no slow hash: SHA-256 of 256 random bits cannot be searched.

Scopes: read; write (implies read); admin (implies write: API keys, and who may connect:
device credentials and device CAs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from ota.records import new_id
from scheduler import keys
from scheduler.audit import key_id as audit_key_id
from scheduler.bus import Out, Producer
from scheduler.errors import NotFound, ValidationError
from scheduler.fields import Obj
from scheduler.settings import Scope

TOKEN_PREFIX = "ota_"
ID_LEN = 32  # new_id(): 32 hex digits
STORED_SCOPES = (Scope.READ, Scope.WRITE, Scope.ADMIN)
NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented a known key: its audit fingerprint, scopes and, if stored, its id."""

    key_id: str  # scheduler/audit.key_id of the key: what audit records name
    scopes: frozenset[Scope]
    stored_id: str | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def stored_id(token: str) -> str | None:
    """The id a stored key carries, or None when the token is not shaped like one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    rest = token[len(TOKEN_PREFIX) :]
    candidate, sep = rest[:ID_LEN], rest[ID_LEN : ID_LEN + 1]
    if sep != "_" or len(rest) <= ID_LEN + 1:
        return None
    return candidate if all(c in "0123456789abcdef" for c in candidate) else None


def implied(scopes: set[Scope]) -> frozenset[Scope]:
    """admin implies write, write implies read."""
    if Scope.ADMIN in scopes:
        scopes.add(Scope.WRITE)
    if Scope.WRITE in scopes:
        scopes.add(Scope.READ)
    return frozenset(scopes)


def parse_request(body: Any) -> tuple[str, frozenset[Scope]]:
    """`{"name": ..., "scopes": [...]}` -> the name and the scopes with their implications."""
    obj = Obj(body, "", frozenset({"name", "scopes"}))
    name = obj.text("name", max_len=NAME_MAX).strip()
    if not name or not name.isprintable():
        raise ValidationError("name must be printable text", code="bad_name", field="name")
    wanted = obj.strings("scopes", max_items=len(STORED_SCOPES), max_len=16)
    allowed = {s.value for s in STORED_SCOPES}
    unknown = sorted(set(wanted) - allowed)
    if unknown or not wanted:
        raise ValidationError(
            f"scopes must be one or more of read, write, admin; got {', '.join(unknown) or 'none'}",
            code="bad_scopes",
            field="scopes",
        )
    return name, implied({Scope(s) for s in wanted})


def public(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored key as the API shows it: never the hash, with its audit fingerprint."""
    return {
        "id": doc["id"],
        "name": doc["name"],
        "scopes": doc["scopes"],
        "created_ms": doc["created_ms"],
        "key_id": "sha256:" + doc["sha256"][:12],
    }


class ApiKeys:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        topic: str,
        configured: Mapping[str, frozenset[Scope]],
    ) -> None:
        self._r, self._producer, self._topic = r, producer, topic
        self._configured = configured

    async def identify(self, token: str) -> Principal | None:
        """The principal a bearer token names, or None for an unknown or revoked key."""
        found: frozenset[Scope] | None = None
        for key, scopes in self._configured.items():  # every key compared: constant time
            if hmac.compare_digest(key.encode(), token.encode()):
                found = scopes
        if found is not None:
            return Principal(audit_key_id(token), found)
        kid = stored_id(token)
        if kid is None:
            return None
        doc = await self._doc(kid)
        if doc is None or not hmac.compare_digest(doc["sha256"], digest(token)):
            return None
        return Principal(audit_key_id(token), _scopes(doc), kid)

    async def scopes_of(self, kid: str) -> frozenset[Scope]:
        """A stored key's scopes now; none once revoked."""
        doc = await self._doc(kid)
        return _scopes(doc) if doc is not None else frozenset()

    async def create(self, body: Any, now_ms: int) -> dict[str, Any]:
        """A new stored key: its public view and, this once, `key` itself."""
        name, scopes = parse_request(body)
        kid = new_id()
        token = f"{TOKEN_PREFIX}{kid}_{secrets.token_urlsafe(32)}"
        doc = {
            "id": kid,
            "name": name,
            "scopes": sorted(s.value for s in scopes),
            "created_ms": now_ms,
            "sha256": digest(token),
        }
        raw = orjson.dumps(doc)
        await self._producer.send([Out(self._topic, kid, raw)])  # the record first
        await self._r.hset(keys.API_KEYS, kid, raw)
        return {**public(doc), "key": token}

    async def all(self) -> list[dict[str, Any]]:
        rows = await self._r.hvals(keys.API_KEYS)
        docs = sorted((orjson.loads(raw) for raw in rows), key=lambda d: d["created_ms"])
        return [public(d) for d in docs]

    async def revoke(self, kid: str) -> dict[str, Any]:
        doc = await self._doc(kid)
        if doc is None:
            raise NotFound(f"no API key {kid[:40]!r}", code="unknown_key")
        await self._producer.send([Out(self._topic, kid, None)])  # tombstone, then the view
        await self._r.hdel(keys.API_KEYS, kid)
        return public(doc)

    async def _doc(self, kid: str) -> dict[str, Any] | None:
        raw = await self._r.hget(keys.API_KEYS, kid)
        if raw is None:
            return None
        doc: dict[str, Any] = orjson.loads(raw)
        return doc


def _scopes(doc: Mapping[str, Any]) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in doc["scopes"])
