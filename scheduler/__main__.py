"""`python -m scheduler`: the control plane (REST API, consumers, reconciler, webhooks)."""

import sys

from ota.runtime import run
from scheduler.main import SERVICE

if __name__ == "__main__":
    sys.exit(run(SERVICE))
