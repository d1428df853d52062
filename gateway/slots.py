"""Which gateway replica forwards a device's uplink.

Mosquitto does not deliver shared subscriptions on `$` topics, so every replica may
receive every device's uplink; each forwards only the devices of its own slot and
acknowledges the rest. The slot is a stable hash (CRC-32, the same in every process
and language) of the device id modulo the replica count.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum


class SplitMode(StrEnum):
    SLOT = "slot"  # plain subscription on every replica, filtered by hash slot
    SHARED = "shared"  # MQTT 5 shared subscription, for brokers that allow it on `$` topics


def slot_of(device_id: str, replicas: int) -> int:
    return zlib.crc32(device_id.encode()) % replicas


@dataclass(frozen=True, slots=True)
class Split:
    """How this replica shares the uplink with the others."""

    mode: SplitMode
    replicas: int = 1
    index: int = 0
    share_group: str = "ota-gateway"

    def __post_init__(self) -> None:
        if self.replicas < 1 or not 0 <= self.index < self.replicas:
            raise ValueError(f"replica index {self.index} is not within 0..{self.replicas - 1}")

    def uplink_filter(self, base: str) -> str:
        return f"$share/{self.share_group}/{base}" if self.mode is SplitMode.SHARED else base

    def forwards_presence(self, device_id: str, held: bool) -> bool:
        """Whether this replica writes a presence notice. Live notices reach every replica in
        both modes: one slot writes each device's. A held notice (released by the broker
        after a gap without subscribers) reached only the replicas subscribed during the
        release, possibly not the device's own: each of them writes it."""
        return held or self.replicas == 1 or slot_of(device_id, self.replicas) == self.index

    def owns(self, device_id: str) -> bool:
        if self.mode is SplitMode.SHARED or self.replicas == 1:
            return True
        return slot_of(device_id, self.replicas) == self.index
