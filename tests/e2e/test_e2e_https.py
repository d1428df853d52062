"""Downloads are HTTPS by default: the stack's edge serves the local CA's edge certificate
(deploy/local/make_certs.py), the download URLs the workers hand out are https, and only a
client trusting that CA gets through (the other e2e tests' devices upgrade this way)."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import missing

sys.path.insert(0, str(Path(__file__).parent))
from e2e_support import E2E


def https_base(e2e: E2E) -> str:
    base = e2e.env["OTA_DOWNLOAD_BASE_URL"]
    if not base.startswith("https://"):
        missing(
            "the local stack has no edge certificate (OTA_BROKER_TLS_DIR without edge.pem): "
            "run deploy/local/up and source .state/env.sh"
        )
    return base


def test_the_edge_answers_only_clients_that_trust_the_local_ca(e2e: E2E) -> None:
    base = https_base(e2e)
    trusted = ssl.create_default_context(cafile=e2e.env["OTA_DOWNLOAD_CA_FILE"])
    # No token: refused by the edge, but over a verified TLS connection.
    answer = httpx.get(f"{base}/sha256/{'0' * 64}", verify=trusted, timeout=10)
    assert answer.status_code in (401, 403, 404)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{base}/sha256/{'0' * 64}", verify=ssl.create_default_context(), timeout=10)
    plain = base.replace("https://", "http://", 1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/sha256/{'0' * 64}", timeout=10)
