"""Known vulnerabilities of pinned packages, decided from OSV advisories. Pure: no I/O.

What may live here: OSV records (the format of the PyPA advisory database) trimmed to the
fields the check reads and parsed into small values, the decision whether a pinned version
is affected, and the verdict against the reviewed list. Files, git and printing belong to
deploy/check_advisories.py.

A version is affected by an `affected[]` entry when an ECOSYSTEM range's events place it
between an `introduced` and the next `fixed` (excluded) or `last_affected` (included), in
PEP 440 order (so 2.0rc1 comes before a fix in 2.0), or when the entry's `versions` list
names it. Withdrawn advisories affect nothing. Package names compare in their PEP 503 form.

Errors: AdvisoryError, for a record or a reviewed list that cannot be read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

EVENT_KINDS = ("introduced", "fixed", "last_affected")


class AdvisoryError(ValueError):
    """An advisory, a pinned version or the reviewed list is malformed."""


@dataclass(frozen=True)
class Event:
    kind: str  # one of EVENT_KINDS
    version: Version | None  # None: introduced "0", before every version


@dataclass(frozen=True)
class Affected:
    package: str  # PEP 503 name
    ranges: tuple[tuple[Event, ...], ...]  # the events of each ECOSYSTEM range, sorted
    versions: frozenset[Version]

    def affects(self, version: Version) -> bool:
        return version in self.versions or any(_in_range(r, version) for r in self.ranges)

    def fixed_after(self, version: Version) -> list[str]:
        """The first fix above `version` in each range holding it (in every range when
        only the versions list names it): the releases that would leave this entry."""
        fixes = []
        for events in [r for r in self.ranges if _in_range(r, version)] or self.ranges:
            above = [
                e.version
                for e in events
                if e.kind == "fixed" and e.version is not None and e.version > version
            ]
            if above:
                fixes.append(str(min(above)))
        return fixes


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    withdrawn: bool
    affected: tuple[Affected, ...]


@dataclass(frozen=True)
class Pin:
    source: str  # the file that pins it
    package: str  # PEP 503 name
    version: str


@dataclass(frozen=True)
class Finding:
    pin: Pin
    advisory: Advisory
    fixed: tuple[str, ...]  # fixed versions above the pin; empty when none is known

    def describe(self) -> str:
        aliases = ", ".join(self.advisory.aliases) or "no aliases"
        fixed = ", ".join(self.fixed) or "none known"
        return (
            f"{self.pin.package}=={self.pin.version} ({self.pin.source}): "
            f"{self.advisory.id} ({aliases}); fixed in: {fixed}"
        )


@dataclass(frozen=True)
class Accepted:
    package: str
    version: str
    advisory: str
    reason: str

    def matches(self, finding: Finding) -> bool:
        return (
            canonicalize_name(self.package) == finding.pin.package
            and self.version == finding.pin.version
            and self.advisory == finding.advisory.id
        )


def _in_range(events: Sequence[Event], version: Version) -> bool:
    # OSV's evaluation: walk the events in version order; introduced opens, fixed and
    # last_affected close (fixed at its version, last_affected just above it).
    affected = False
    for event in events:
        if event.kind == "introduced":
            if event.version is None or version >= event.version:
                affected = True
        elif event.version is not None and (
            version >= event.version if event.kind == "fixed" else version > event.version
        ):
            affected = False
    return affected


def _version(text: object, where: str) -> Version:
    try:
        return Version(str(text))
    except InvalidVersion:
        raise AdvisoryError(f"{where}: {text!r} is not a PEP 440 version") from None


def _event(raw: Mapping[str, Any], where: str) -> Event | None:
    """An event the check uses; None for others (limit only bounds git ranges)."""
    kinds = [k for k in EVENT_KINDS if k in raw]
    if not kinds:
        return None
    kind = kinds[0]
    if kind == "introduced" and str(raw[kind]) == "0":
        return Event(kind, None)
    return Event(kind, _version(raw[kind], where))


def _order(event: Event) -> tuple[int, Version]:
    return (0, Version("0")) if event.version is None else (1, event.version)


def _pypi_entries(record: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for entry in record.get("affected") or ():
        package = entry.get("package") or {}
        if package.get("ecosystem") == "PyPI" and package.get("name"):
            yield canonicalize_name(str(package["name"])), entry


def _malformed(record: Mapping[str, Any], exc: Exception) -> AdvisoryError:
    return AdvisoryError(f"{record.get('id', 'an advisory')}: malformed OSV record ({exc})")


def parse(record: Mapping[str, Any]) -> Advisory:
    """An OSV record (whole or trimmed) as the check's values; PyPI entries only."""
    if not isinstance(record, Mapping):
        raise AdvisoryError(f"not an OSV record (a {type(record).__name__})")
    try:
        return _parse(record)
    except (AttributeError, TypeError) as exc:  # a list where a table belongs, and so on
        raise _malformed(record, exc) from None


def trim(record: Mapping[str, Any], names: Container[str]) -> dict[str, Any] | None:
    """The record cut down to what parse() reads, for the packages in `names` (PEP 503);
    None when it concerns none of them. A listed version the ranges already cover is
    dropped (it changes no answer), and so is one that is not PEP 440: pip installs none."""
    try:
        return _trim(record, names)
    except (AttributeError, TypeError) as exc:
        raise _malformed(record, exc) from None


def _parse(record: Mapping[str, Any]) -> Advisory:
    ident = record.get("id")
    if not isinstance(ident, str) or not ident:
        raise AdvisoryError(f"an advisory without an id: {str(record)[:80]}")
    affected = []
    for name, entry in _pypi_entries(record):
        ranges = []
        for raw in entry.get("ranges") or ():
            if raw.get("type") != "ECOSYSTEM":
                continue
            events = [_event(e, ident) for e in raw.get("events") or ()]
            ranges.append(tuple(sorted((e for e in events if e), key=_order)))
        versions = frozenset(_version(v, ident) for v in entry.get("versions") or ())
        affected.append(Affected(name, tuple(ranges), versions))
    aliases = tuple(str(a) for a in record.get("aliases") or ())
    return Advisory(ident, aliases, bool(record.get("withdrawn")), tuple(affected))


def _trim(record: Mapping[str, Any], names: Container[str]) -> dict[str, Any] | None:
    ident = str(record.get("id"))
    kept = []
    for name, entry in _pypi_entries(record):
        if name not in names:
            continue
        ranges = [
            {"type": "ECOSYSTEM", "events": [dict(e) for e in r.get("events") or ()]}
            for r in entry.get("ranges") or ()
            if r.get("type") == "ECOSYSTEM"
        ]
        covered = _parse({"id": ident, "affected": [{**entry, "versions": []}]}).affected[0]
        versions = []
        for text in entry.get("versions") or ():
            try:
                version = Version(str(text))
            except InvalidVersion:
                continue
            if not covered.affects(version):
                versions.append(str(text))
        package = {"ecosystem": "PyPI", "name": name}
        kept.append({"package": package, "ranges": ranges, "versions": versions})
    if not kept:
        return None
    trimmed: dict[str, Any] = {"id": ident, "aliases": list(record.get("aliases") or ())}
    if record.get("withdrawn"):
        trimmed["withdrawn"] = str(record["withdrawn"])
    trimmed["modified"] = str(record.get("modified", ""))
    trimmed["affected"] = kept
    return trimmed


def find(pins: Iterable[Pin], advisories: Iterable[Advisory]) -> list[Finding]:
    """Every (pin, advisory) where the advisory affects the pinned version."""
    by_package: dict[str, list[tuple[Advisory, Affected]]] = {}
    for advisory in advisories:
        if advisory.withdrawn:
            continue
        for entry in advisory.affected:
            by_package.setdefault(entry.package, []).append((advisory, entry))
    found = []
    for pin in pins:
        version = _version(pin.version, f"{pin.source}: {pin.package}")
        hits: dict[str, tuple[Advisory, set[str]]] = {}
        for advisory, entry in by_package.get(canonicalize_name(pin.package), ()):
            if entry.affects(version):
                fixes = hits.setdefault(advisory.id, (advisory, set()))[1]
                fixes.update(entry.fixed_after(version))
        for advisory, fixes in hits.values():
            found.append(Finding(pin, advisory, tuple(sorted(fixes, key=Version))))
    return sorted(found, key=lambda f: (f.pin.package, f.pin.source, f.advisory.id))


def load_reviewed(text: str, where: str) -> list[Accepted]:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AdvisoryError(f"{where}: {exc}") from None
    entries = []
    for number, raw in enumerate(table.get("accepted", []), 1):
        fields = ("package", "version", "advisory", "reason")
        if not all(isinstance(raw.get(f), str) and raw[f].strip() for f in fields):
            raise AdvisoryError(
                f"{where}: entry {number} needs package, version, advisory and a reason"
            )
        entries.append(Accepted(*(raw[f] for f in fields)))
    return entries


def judge(found: Sequence[Finding], accepted: Sequence[Accepted], where: str) -> list[str]:
    """The problems: findings no entry accepts, entries accepting nothing."""
    problems = [
        f"not reviewed: {f.describe()}" for f in found if not any(a.matches(f) for a in accepted)
    ]
    problems += [
        f"stale entry in {where}: {a.package}=={a.version} {a.advisory} matches no finding: remove it"
        for a in accepted
        if not any(a.matches(f) for f in found)
    ]
    return problems


def uncovered(pinned: Iterable[str], covered: Container[str]) -> list[str]:
    """Pinned packages the subset was not refreshed for: their advisories are unknown."""
    return sorted({name for name in pinned if name not in covered})


def headline(snapshot: Mapping[str, Any], advisories: Sequence[Advisory], today: date) -> str:
    """The first line of the report: how old the knowledge is, and how much of it was read."""
    taken = date.fromisoformat(str(snapshot["date"])[:10])
    commit = str(snapshot.get("commit") or "")[:12] or "no commit"
    withdrawn = sum(a.withdrawn for a in advisories)
    return (
        f"advisories: {snapshot['source']} at {commit}, dated {taken.isoformat()} "
        f"({(today - taken).days} days old: anything published later is unknown here); "
        f"{len(advisories)} advisories read ({withdrawn} withdrawn, skipped)"
    )
