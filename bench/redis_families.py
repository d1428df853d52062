"""Where a Redis database's bytes go: MEMORY USAGE of every key, summed per key family.

A family is a key with its identifiers (device, task, job, package ids, numbered hash
tags) replaced by `*`, so `ota:{sched}:dev:bench-00042:tl` counts under
`ota:{sched}:dev:*:tl` and `ota:{p7}:d:bench-00042` under `ota:*:d:*`.
"""

from __future__ import annotations

import re
from typing import Any

# A segment naming one thing rather than a kind of thing: it has a digit (a partition's
# or shard's hash tag too) or is long.
_IDENTIFIER = re.compile(r"^(.*\d.*|.{17,})$")


def family(key: str) -> str:
    """The key with each identifier segment replaced by `*`."""
    return ":".join("*" if _IDENTIFIER.match(part) else part for part in key.split(":"))


def bytes_by_family(client: Any, batch: int = 1000) -> dict[str, dict[str, int]]:
    """{family: {"keys": n, "bytes": MEMORY USAGE sum, "expiring": bytes of its keys with a
    TTL}} over every key, largest first."""
    found: dict[str, dict[str, int]] = {}
    keys: list[bytes | str] = []

    def measure() -> None:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.ttl(key)
        answers = pipe.execute()
        for key, used, ttl in zip(keys, answers[::2], answers[1::2], strict=True):
            name = key.decode() if isinstance(key, bytes) else key
            entry = found.setdefault(family(name), {"keys": 0, "bytes": 0, "expiring": 0})
            entry["keys"] += 1
            entry["bytes"] += int(used or 0)
            if int(ttl) > 0:
                entry["expiring"] += int(used or 0)
        keys.clear()

    for key in client.scan_iter(count=batch):
        keys.append(key)
        if len(keys) >= batch:
            measure()
    measure()
    return dict(sorted(found.items(), key=lambda item: -item[1]["bytes"]))


def per_device(families: dict[str, dict[str, int]], devices: int) -> dict[str, Any]:
    """The db's bytes per device, in total and per family (families under 1 byte dropped),
    and what stays once the keys with a TTL (finished jobs, download progress, uploaded
    target lists) have expired."""
    total = sum(entry["bytes"] for entry in families.values())
    expiring = sum(entry["expiring"] for entry in families.values())
    split = {
        name: round(entry["bytes"] / devices, 1)
        for name, entry in families.items()
        if entry["bytes"] >= devices
    }
    return {
        "bytes_per_device": round(total / devices),
        "bytes_per_device_after_ttls": round((total - expiring) / devices),
        "db_bytes": total,
        "split": split,
        "expiring": {
            name: round(entry["expiring"] / devices, 1)
            for name, entry in families.items()
            if entry["expiring"] >= devices
        },
    }
