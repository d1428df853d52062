"""How services authenticate to Kafka and Redis, and over what: TLS and credentials.

Read once with the common settings (ota/settings.py) and handed to the client
factories (ota/kafka_clients.py, ota/redis_clients.py). Defaults are the local stack's:
plaintext Kafka and Redis on loopback with no credentials. Passwords may come from
`*_FILE` variables (ota/env.py). docs/security.md lists every variable.

| variable | meaning |
|---|---|
| OTA_KAFKA_SECURITY_PROTOCOL | PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL |
| OTA_KAFKA_SASL_MECHANISM | PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (SASL_* only) |
| OTA_KAFKA_SASL_USERNAME, OTA_KAFKA_SASL_PASSWORD[_FILE] | the SASL user |
| OTA_KAFKA_SSL_CA_FILE | CA bundle the brokers' certificates are checked against |
| OTA_KAFKA_SSL_CERT_FILE, OTA_KAFKA_SSL_KEY_FILE | client certificate (mutual TLS) |
| OTA_KAFKA_SSL_CHECK_HOSTNAME | check the broker's name in its certificate (true) |
| OTA_REDIS_USERNAME, OTA_REDIS_PASSWORD[_FILE] | Redis ACL user (or `default`) |
| OTA_REDIS_TLS_CA_FILE | CA for `rediss://` URLs (the system's CAs otherwise) |
| OTA_REDIS_TLS_CERT_FILE, OTA_REDIS_TLS_KEY_FILE | client certificate (mutual TLS) |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ota.env import PREFIX, Env, SettingsError

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# `+cluster`: the URL names one node of a Redis Cluster (ota/redis_clients.py).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
TLS_SCHEMES = ("rediss", "rediss+cluster")


@dataclass(frozen=True)
class KafkaSecurity:
    """Kafka client security; `client_config()` is the kafka-python keyword arguments,
    `librdkafka_config()` confluent-kafka's properties."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Env) -> KafkaSecurity:
        protocol = env.text("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise SettingsError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
                + ", ".join(KAFKA_PROTOCOLS)
            )
        sasl = protocol.startswith("SASL_")
        tls = protocol in ("SSL", "SASL_SSL")
        mechanism = env.text("KAFKA_SASL_MECHANISM", "").upper() or None
        username = env.text("KAFKA_SASL_USERNAME", "") or None
        password = env.secret("KAFKA_SASL_PASSWORD", "") or None
        if not sasl and (mechanism or username or password):
            raise SettingsError(
                f"{PREFIX}KAFKA_SASL_* is set but {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} "
                "is not SASL_PLAINTEXT or SASL_SSL"
            )
        if sasl:
            if mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_MECHANISM={mechanism or ''!r} is not one of "
                    + ", ".join(SASL_MECHANISMS)
                )
            if username is None:
                raise SettingsError(f"{PREFIX}KAFKA_SASL_USERNAME is required with {protocol}")
            if password is None:
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_PASSWORD (or _FILE) is required with {protocol}"
                )
        ca_file = env.readable_file("KAFKA_SSL_CA_FILE")
        cert_file = env.readable_file("KAFKA_SSL_CERT_FILE")
        key_file = env.readable_file("KAFKA_SSL_KEY_FILE")
        if not tls and (ca_file or cert_file or key_file):
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_* is set but {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} "
                "is not SSL or SASL_SSL"
            )
        if (cert_file is None) != (key_file is None):
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_CERT_FILE and {PREFIX}KAFKA_SSL_KEY_FILE go together"
            )
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism if sasl else None,
            sasl_username=username,
            sasl_password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            check_hostname=env.flag("KAFKA_SSL_CHECK_HOSTNAME", True),
        )

    def client_config(self) -> dict[str, Any]:
        """The keyword arguments every kafka-python client (producer, consumer, admin) takes."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            config["sasl_plain_password"] = self.sasl_password
        if self.tls:
            config["ssl_check_hostname"] = self.check_hostname
            if self.ca_file is not None:
                config["ssl_cafile"] = str(self.ca_file)
            if self.cert_file is not None and self.key_file is not None:
                config["ssl_certfile"] = str(self.cert_file)
                config["ssl_keyfile"] = str(self.key_file)
        return config

    def librdkafka_config(self) -> dict[str, Any]:
        """The same for a confluent-kafka (librdkafka) client."""
        config: dict[str, Any] = {"security.protocol": self.protocol}
        if self.sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        if self.tls:
            # librdkafka checks the broker's name only when asked to ("https"); none skips it.
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.check_hostname else "none"
            )
            if self.ca_file is not None:
                config["ssl.ca.location"] = str(self.ca_file)
            if self.cert_file is not None and self.key_file is not None:
                config["ssl.certificate.location"] = str(self.cert_file)
                config["ssl.key.location"] = str(self.key_file)
        return config


@dataclass(frozen=True)
class RedisSecurity:
    """Redis credentials and TLS files; `client_kwargs(url)` is redis-py's from_url extras.

    Credentials written in a URL itself win over these (redis-py reads the URL last), so a
    second Redis with its own user (OTA_CREDENTIALS_REDIS_URL) can carry them there."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_env(cls, env: Env) -> RedisSecurity:
        username = env.text("REDIS_USERNAME", "") or None
        password = env.secret("REDIS_PASSWORD", "") or None
        if username is not None and password is None:
            raise SettingsError(f"{PREFIX}REDIS_USERNAME needs {PREFIX}REDIS_PASSWORD (or _FILE)")
        cert_file = env.readable_file("REDIS_TLS_CERT_FILE")
        key_file = env.readable_file("REDIS_TLS_KEY_FILE")
        if (cert_file is None) != (key_file is None):
            raise SettingsError(
                f"{PREFIX}REDIS_TLS_CERT_FILE and {PREFIX}REDIS_TLS_KEY_FILE go together"
            )
        return cls(
            username=username,
            password=password,
            ca_file=env.readable_file("REDIS_TLS_CA_FILE"),
            cert_file=cert_file,
            key_file=key_file,
        )

    @property
    def tls_files(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None

    def check_url(self, variable: str, url: str) -> str:
        """`url` if redis-py can use it with these settings; SettingsError naming
        `variable` otherwise (the message never repeats a password inside the URL)."""
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES:
            raise SettingsError(
                f"{PREFIX}{variable} must start with redis://, rediss://, unix://, "
                f"redis+cluster:// or rediss+cluster:// (found {parts.scheme or 'no'} scheme)"
            )
        if self.tls_files and parts.scheme not in TLS_SCHEMES:
            raise SettingsError(
                f"{PREFIX}REDIS_TLS_* files are set but {PREFIX}{variable} is not "
                "rediss:// or rediss+cluster://"
            )
        if parts.scheme.endswith("+cluster"):
            _check_cluster_nodes(variable, parts.netloc.rpartition("@")[2])
            if parts.path.strip("/") not in ("", "0"):
                raise SettingsError(
                    f"{PREFIX}{variable}: a Redis Cluster has only database 0 "
                    f"(found {parts.path.strip('/')!r})"
                )
        return url

    def client_kwargs(self, url: str) -> dict[str, Any]:
        """Extra keyword arguments for redis-py's `from_url(url, ...)`."""
        kwargs: dict[str, Any] = {}
        if self.password is not None:
            kwargs["password"] = self.password
            if self.username is not None:
                kwargs["username"] = self.username
        if urlsplit(url).scheme in TLS_SCHEMES:
            kwargs["ssl_cert_reqs"] = "required"
            if self.ca_file is not None:
                kwargs["ssl_ca_certs"] = str(self.ca_file)
            if self.cert_file is not None and self.key_file is not None:
                kwargs["ssl_certfile"] = str(self.cert_file)
                kwargs["ssl_keyfile"] = str(self.key_file)
        return kwargs


def _check_cluster_nodes(variable: str, hosts: str) -> None:
    """A cluster URL names host:port nodes, comma-separated."""
    for address in hosts.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"{PREFIX}{variable}: {address!r} is not host:port (a cluster URL names "
                "one node or several, comma-separated)"
            )
