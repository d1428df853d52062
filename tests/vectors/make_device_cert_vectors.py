"""Write the certificates the broker's DeviceCertificateTest (JUnit) checks against.

    .venv/bin/python tests/vectors/make_device_cert_vectors.py

Writes deploy/broker/src/test/resources/device-certs/*.pem (certificates only, no keys:
the pure check needs none). Fresh keys each run, so rerunning changes every file; the test
only relies on the relations between them (who signed whom, names, dates, usages).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: x509_kit

from x509_kit import issue, make_ca

OUT = Path(__file__).resolve().parents[2] / "deploy/broker/src/test/resources/device-certs"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ca = make_ca("Fleet Device CA")
    other = make_ca("Someone Else's CA")
    intermediate = make_ca("Fleet Device Intermediate", ca)
    files = {
        "ca": ca.pem(),
        "other-ca": other.pem(),
        "intermediate": intermediate.pem(),
        "dev-1": issue(ca, "dev-1").chain_pem(),
        "dev-1-san": issue(ca, "Fleet unit 7", ("unit-7.example", "dev-1")).chain_pem(),
        "dev-1-via-intermediate": issue(intermediate, "dev-1").chain_pem(),
        "dev-1-with-root": issue(ca, "dev-1").chain_pem() + ca.pem(),
        "dev-2": issue(ca, "dev-2").chain_pem(),
        "dev-1-other-ca": issue(other, "dev-1").chain_pem(),
        "dev-1-expired": issue(
            ca,
            "dev-1",
            not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
        ).chain_pem(),
        "dev-1-server-only": issue(ca, "dev-1", client_auth=False).chain_pem(),
        "dev-1-prefix": issue(ca, "dev-1x").chain_pem(),
    }
    for name, pem in files.items():
        (OUT / f"{name}.pem").write_text(pem)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()
