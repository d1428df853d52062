"""The gateway's platform MQTT connection can use TLS, verifying the broker's CA."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.service import _link_config
from gateway.settings import GatewaySettings
from ota.settings import SettingsError


def write_ca(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test platform CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_plain_tcp_by_default() -> None:
    settings = GatewaySettings.from_env({})
    assert settings.platform_tls_context() is None
    assert _link_config(settings).tls is None


def test_tls_verifies_the_broker_against_the_configured_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    write_ca(ca)
    settings = GatewaySettings.from_env(
        {"OTA_MQTT_PLATFORM_TLS": "1", "OTA_MQTT_PLATFORM_CA_FILE": str(ca)}
    )
    context = _link_config(settings).tls
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    subjects = [dict(item[0] for item in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": "test platform CA"} in subjects


def test_a_ca_without_tls_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    write_ca(ca)
    with pytest.raises(SettingsError, match="OTA_MQTT_PLATFORM_TLS is not"):
        GatewaySettings.from_env({"OTA_MQTT_PLATFORM_CA_FILE": str(ca)})
