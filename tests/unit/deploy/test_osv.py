"""deploy/osv.py: which pinned versions an OSV advisory affects, with synthetic advisories
(ranges, last_affected, versions lists, withdrawn, names, pre-releases), trimming that
changes no answer, and the verdict against the reviewed list."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import deploy_kit

osv = deploy_kit.load("osv")


def record(
    *events: dict[str, str],
    versions: tuple[str, ...] = (),
    name: str = "demo-pkg",
    ident: str = "PYSEC-0000-1",
    **extra: Any,
) -> dict[str, Any]:
    ranges = [{"type": "ECOSYSTEM", "events": list(events)}] if events else []
    package = {"ecosystem": "PyPI", "name": name}
    affected = [{"package": package, "ranges": ranges, "versions": list(versions)}]
    return {"id": ident, "aliases": ["CVE-0000-1"], "affected": affected, **extra}


def found(raw: dict[str, Any], *pins: str, package: str = "demo-pkg") -> dict[str, tuple[str, ...]]:
    """Affected pinned versions and the fixes reported for each."""
    advisory = osv.parse(raw)
    hits = osv.find([osv.Pin("lock.txt", package, v) for v in pins], [advisory])
    return {f.pin.version: f.fixed for f in hits}


def test_a_range_covers_from_introduced_up_to_the_fix_excluded() -> None:
    raw = record({"introduced": "1.0"}, {"fixed": "1.4"})
    hits = found(raw, "0.9", "1.0", "1.3.9", "1.4", "2.0")
    assert hits == {"1.0": ("1.4",), "1.3.9": ("1.4",)}


def test_ranges_are_walked_in_version_order_and_report_the_next_fix() -> None:
    # As the database writes urllib3's: the newer branch first.
    raw = record(
        {"introduced": "2.0.0"}, {"fixed": "2.0.7"}, {"introduced": "0"}, {"fixed": "1.26.18"}
    )
    hits = found(raw, "1.26.17", "1.26.18", "2.0.0", "2.0.6", "2.0.7")
    assert hits == {"1.26.17": ("1.26.18",), "2.0.0": ("2.0.7",), "2.0.6": ("2.0.7",)}


def test_last_affected_is_included_and_names_no_fix() -> None:
    raw = record({"introduced": "0"}, {"last_affected": "2.1"})
    assert found(raw, "0.1", "2.1", "2.1.post1", "2.2") == {"0.1": (), "2.1": ()}


def test_an_explicit_versions_list_affects_those_versions_only() -> None:
    raw = record(versions=("1.5", "1.7"))
    assert found(raw, "1.5.0", "1.6", "1.7") == {"1.5.0": (), "1.7": ()}


def test_a_withdrawn_advisory_affects_nothing() -> None:
    live = record({"introduced": "0"}, {"fixed": "9"})
    assert found(live, "1.0") == {"1.0": ("9",)}
    assert found({**live, "withdrawn": "2024-01-02T00:00:00Z"}, "1.0") == {}


@pytest.mark.parametrize("pinned", ["flask-cors", "Flask_CORS", "flask.cors"])
def test_names_compare_in_their_pep_503_form(pinned: str) -> None:
    raw = record({"introduced": "0"}, {"fixed": "4.0"}, name="Flask-Cors")
    assert found(raw, "3.0", package=pinned) == {"3.0": ("4.0",)}


def test_pre_releases_sort_before_their_release() -> None:
    fixed = record({"introduced": "0"}, {"fixed": "2.0"})
    assert found(fixed, "2.0rc1", "2.0", "2.0.post1") == {"2.0rc1": ("2.0",)}
    introduced = record({"introduced": "2.0"}, {"fixed": "2.1"})
    assert found(introduced, "2.0rc1", "2.0", "2.1a1") == {"2.0": ("2.1",), "2.1a1": ("2.1",)}


def test_other_ecosystems_and_git_ranges_are_ignored() -> None:
    raw = record({"introduced": "0"}, {"fixed": "1.0"})
    raw["affected"][0]["package"]["ecosystem"] = "npm"
    raw["affected"].append(
        {
            "package": {"ecosystem": "PyPI", "name": "demo-pkg"},
            "ranges": [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}],
        }
    )
    assert found(raw, "0.5") == {}


def test_bad_records_are_refused_with_the_advisory_named() -> None:
    with pytest.raises(osv.AdvisoryError, match=r"PYSEC-0000-1: 'one\.two\?' is not a PEP 440"):
        osv.parse(record({"introduced": "one.two?"}))
    with pytest.raises(osv.AdvisoryError, match="PYSEC-0000-1: malformed OSV record"):
        osv.parse({"id": "PYSEC-0000-1", "affected": ["demo-pkg"]})
    with pytest.raises(osv.AdvisoryError, match="without an id"):
        osv.parse({"affected": []})


def test_trim_keeps_only_named_packages_and_uncovered_listed_versions() -> None:
    raw = record(
        {"introduced": "0"},
        {"fixed": "1.2"},
        versions=("1.0", "1.1", "1.5", "not a version!"),
        details="long text",
        references=[{"type": "WEB", "url": "https://example.invalid"}],
    )
    trimmed = osv.trim(raw, {"demo-pkg"})
    assert trimmed is not None
    assert set(trimmed) == {"id", "aliases", "modified", "affected"}
    assert trimmed["affected"][0]["versions"] == ["1.5"]
    assert osv.trim(raw, {"other"}) is None
    withdrawn = osv.trim({**raw, "withdrawn": "2024-01-02T00:00:00Z"}, {"demo-pkg"})
    assert withdrawn is not None
    assert osv.parse(withdrawn).withdrawn


_versions = st.builds(
    lambda parts, pre: ".".join(map(str, parts)) + pre,
    st.lists(st.integers(0, 4), min_size=1, max_size=3),
    st.sampled_from(["", "rc1", ".post1"]),
)
_events = st.lists(
    st.tuples(st.sampled_from(["introduced", "fixed", "last_affected"]), _versions), max_size=5
)


@given(
    events=_events, listed=st.lists(_versions, max_size=4), probes=st.lists(_versions, max_size=6)
)
def test_trimming_changes_no_answer(
    events: list[tuple[str, str]], listed: list[str], probes: list[str]
) -> None:
    raw = record(*({kind: v} for kind, v in events), versions=tuple(listed))
    trimmed = osv.trim(raw, {"demo-pkg"})
    assert trimmed is not None
    assert found(trimmed, *probes) == found(raw, *probes)


def _finding(version: str, ident: str) -> Any:
    advisory = osv.parse(record({"introduced": "0"}, ident=ident))
    return osv.Finding(osv.Pin("lock.txt", "demo-pkg", version), advisory, ())


def test_a_finding_passes_only_with_an_entry_for_its_package_version_and_id() -> None:
    entry = osv.Accepted("Demo_Pkg", "1.0", "PYSEC-0000-1", "not reached")
    assert osv.judge([_finding("1.0", "PYSEC-0000-1")], [entry], "reviewed.toml") == []
    problems = osv.judge([_finding("1.1", "PYSEC-0000-1")], [entry], "reviewed.toml")
    assert problems[0].startswith("not reviewed: demo-pkg==1.1 (lock.txt): PYSEC-0000-1")
    assert problems[1].startswith("stale entry in reviewed.toml: Demo_Pkg==1.0 PYSEC-0000-1")
    assert len(osv.judge([_finding("1.0", "PYSEC-0000-2")], [entry], "reviewed.toml")) == 2


def test_a_reviewed_entry_without_a_reason_is_refused() -> None:
    text = '[[accepted]]\npackage = "a"\nversion = "1"\nadvisory = "X-1"\nreason = " "\n'
    with pytest.raises(
        osv.AdvisoryError, match="entry 1 needs package, version, advisory and a reason"
    ):
        osv.load_reviewed(text, "reviewed.toml")
    assert osv.load_reviewed(text.replace('" "', '"why"'), "r.toml")[0].reason == "why"


def test_the_headline_says_how_old_the_snapshot_is() -> None:
    meta = {"source": "db", "commit": "3ccb612573e2511ab5", "date": "2024-10-10T17:35:05+00:00"}
    advisories = [osv.parse(record(ident="A-1")), osv.parse(record(ident="A-2", withdrawn="x"))]
    line = osv.headline(meta, advisories, date(2024, 11, 9))
    assert line == (
        "advisories: db at 3ccb612573e2, dated 2024-10-10 (30 days old: anything published "
        "later is unknown here); 2 advisories read (1 withdrawn, skipped)"
    )


def test_pinned_packages_the_subset_was_not_made_for_are_named() -> None:
    assert osv.uncovered(["a", "b", "a", "c"], {"b"}) == ["a", "c"]
