"""Download tokens at the edge: 401 without, 403 wrong or malformed, 410 expired."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from ota.settings import TokenKeys
from ota.tokens import mint

from .edge_support import Package, RunningEdge, get


def test_no_token_is_401(edge: RunningEdge, package: Package) -> None:
    reply, _ = get(edge, package.path)
    assert reply.status == 401
    assert reply.getheader("WWW-Authenticate") == 'Bearer realm="ota"'
    reply, _ = get(edge, package.path, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert reply.status == 401


def test_presigned_url_token(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    reply, body = get(edge, f"{package.path}?token={token_for(package.sha256)}")
    assert reply.status == 200
    assert body == package.data


def test_token_for_another_package_is_403(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    reply, body = get(edge, package.path, {"Authorization": f"Bearer {token_for('a' * 64)}"})
    assert reply.status == 403
    assert package.data[:64] not in body


def test_forged_tokens_are_403(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    genuine = token_for(package.sha256, device_id="dev-1")
    version, kid, expiry, _, mac = genuine.split(".")
    other_device = base64.urlsafe_b64encode(b"dev-2").rstrip(b"=").decode()
    foreign_key = TokenKeys.parse("dev1:someone-elses-secret-key", None)
    forgeries = [
        ".".join([version, kid, expiry, other_device, mac]),  # device swapped
        ".".join([version, kid, str(int(expiry) + 10**6), _dev(genuine), mac]),  # expiry moved
        mint(foreign_key, device_id="dev-1", package_sha256=package.sha256, expires_s=int(expiry)),
        "not-a-token",
        "v1.dev1.x.y.z",
        genuine[:-4],
    ]
    for forged in forgeries:
        reply, _ = get(edge, package.path, {"Authorization": f"Bearer {forged}"})
        assert reply.status == 403, forged


def _dev(token: str) -> str:
    return token.split(".")[3]


def test_expired_token_is_410(
    edge: RunningEdge, package: Package, token_for: Callable[..., str]
) -> None:
    reply, _ = get(
        edge,
        package.path,
        {"Authorization": f"Bearer {token_for(package.sha256, expires_in_s=-1)}"},
    )
    assert reply.status == 410


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_denials_apply_to_head_too(edge: RunningEdge, package: Package, method: str) -> None:
    reply, body = get(edge, package.path, {"Authorization": "Bearer junk"}, method=method)
    assert reply.status == 403
    assert (body == b"") == (method == "HEAD")
