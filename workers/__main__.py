"""`python -m workers` runs a worker; `python -m workers rebuild [--partition N]` rebuilds state."""

from __future__ import annotations

import sys

from ota.runtime import run
from workers import rebuild, service

if __name__ == "__main__":
    if sys.argv[1:2] == ["rebuild"]:
        rebuild.main(sys.argv[2:])
    else:
        sys.exit(run(service.SERVICE))
