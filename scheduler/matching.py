"""Whether one device matches a continuous task's targets, from that device's facts. Pure.

A continuous task follows its groups and its filter (`targets.Targets`); when a device's
labels change, the task judges that one device (`matches`) instead of resolving the
whole target again. The rules are `devices.Registry.matching`'s, for one device: the
groups as a union, a filter's parts all at once (versions, groups or tags within a
part: any of them).
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.devices import DeviceFilter
from scheduler.taskdoc import TaskTargets


@dataclass(frozen=True, slots=True)
class Facts:
    """What the registry knows of one device, as far as targets can ask."""

    fw: str | None = None
    sw: str | None = None
    groups: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    online: bool = False


@dataclass(frozen=True, slots=True)
class Followed:
    """The targets a continuous task follows: its groups and its filter."""

    groups: tuple[str, ...] = ()
    filter: DeviceFilter | None = None

    @property
    def group_names(self) -> frozenset[str]:
        """Every group whose membership can change a device's match."""
        inside = self.filter.groups if self.filter is not None else ()
        return frozenset((*self.groups, *inside))

    @property
    def watches_facts(self) -> bool:
        """Whether a change of a device's version or presence can change its match."""
        flt = self.filter
        return flt is not None and bool(
            flt.fw_versions or flt.sw_versions or flt.online is not None
        )

    @property
    def tag_names(self) -> frozenset[str]:
        return frozenset(self.filter.tags) if self.filter is not None else frozenset()


def followed(targets: TaskTargets) -> Followed:
    """The followed targets from a task document's `targets`."""
    flt = targets.get("filter")
    return Followed(
        groups=tuple(targets.get("groups") or ()),
        filter=None
        if flt is None
        else DeviceFilter(
            fw_versions=tuple(flt.get("fw_versions") or ()),
            sw_versions=tuple(flt.get("sw_versions") or ()),
            groups=tuple(flt.get("groups") or ()),
            tags=tuple(flt.get("tags") or ()),
            online=flt.get("online"),
        ),
    )


def filter_matches(flt: DeviceFilter, facts: Facts) -> bool:
    if flt.fw_versions and facts.fw not in flt.fw_versions:
        return False
    if flt.sw_versions and facts.sw not in flt.sw_versions:
        return False
    if flt.groups and facts.groups.isdisjoint(flt.groups):
        return False
    if flt.tags and facts.tags.isdisjoint(flt.tags):
        return False
    return flt.online is None or facts.online is flt.online


def matches(target: Followed, facts: Facts) -> bool:
    if not facts.groups.isdisjoint(target.groups):
        return True
    return target.filter is not None and filter_matches(target.filter, facts)
