"""Wait until a Kafka broker answers a metadata request, or fail after a deadline.

Usage: .venv/bin/python deploy/local/wait_kafka.py --bootstrap 127.0.0.1:9092 --timeout 120
Exit status 0 once the broker answers (prints the cluster id), 1 at the deadline.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError


def cluster_id(bootstrap: str, timeout_s: float) -> str:
    """One metadata round trip; raises KafkaError or OSError when the broker does not answer."""
    timeout_ms = max(1000, int(timeout_s * 1000))
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="ota-wait-kafka",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    args = parser.parse_args()
    # Connection-refused warnings are the expected state while the broker boots.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    deadline = time.monotonic() + args.timeout
    last_error = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(
                f"Kafka on {args.bootstrap} did not answer within {args.timeout:g}s "
                f"(last error: {last_error})",
                file=sys.stderr,
            )
            return 1
        try:
            found = cluster_id(args.bootstrap, min(remaining, 5.0))
            print(f"answering on {args.bootstrap} (cluster id {found})")
            return 0
        except (KafkaError, OSError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    sys.exit(main())
