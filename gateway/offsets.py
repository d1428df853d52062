"""Which downlink offsets may be committed: per partition, the contiguous acknowledged prefix.

Commands are published concurrently and the broker acknowledges them in any order; a
partition's commit point only moves past an offset once it and every earlier offset of
that partition were acknowledged, so a crash never skips an unpublished command.
Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque


class _Partition:
    __slots__ = ("done", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    def started(self, partition: int, offset: int) -> None:
        """An offset was taken on, in consumption (ascending) order."""
        state = self._partitions.setdefault(partition, _Partition())
        if state.pending and offset <= state.pending[-1]:
            raise ValueError(
                f"partition {partition}: offset {offset} is not after {state.pending[-1]}"
            )
        state.pending.append(offset)

    def finished(self, partition: int, offset: int) -> None:
        state = self._partitions.get(partition)
        if state is not None:
            state.done.add(offset)

    def committable(self) -> dict[int, int]:
        """Per partition whose commit point moved: the next offset to consume."""
        out = {}
        for partition, state in self._partitions.items():
            last = None
            while state.pending and state.pending[0] in state.done:
                last = state.pending.popleft()
                state.done.discard(last)
            if last is not None:
                out[partition] = last + 1
        return out

    def in_flight(self) -> int:
        return sum(len(state.pending) for state in self._partitions.values())

    def forget(self, partitions: list[int] | set[int]) -> None:
        """The partitions were revoked: their outstanding offsets are another owner's now."""
        for partition in partitions:
            self._partitions.pop(partition, None)
