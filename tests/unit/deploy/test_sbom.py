"""deploy/sbom.py: the SBOM follows the lock, reproducibly, and refuses disagreement."""

from __future__ import annotations

import json

import pytest

from tests import deploy_kit

sbom = deploy_kit.load("sbom")

LOCK = sbom.parse_lock("# comment\nA_Pkg==1.0\nb==2.0  # why\nc==3.0\nunused==9\nwin==4\n")
METADATA = {
    "a-pkg": ("1.0", ["b>=1", 'c; extra == "fast"', 'win; sys_platform == "win32"']),
    "b": ("2.0", []),
    "c": ("3.0", ["b"]),
}


def _requires_of(name: str) -> tuple[str, list[str]]:
    return METADATA[name]


def test_closure_follows_requested_extras_and_image_markers_only() -> None:
    assert sbom.closure(["A_Pkg"], LOCK, _requires_of) == {"a-pkg": {"b"}, "b": set()}
    graph = sbom.closure(["a-pkg[fast]"], LOCK, _requires_of)
    assert graph == {"a-pkg": {"b", "c"}, "b": set(), "c": {"b"}}


def test_the_document_is_cyclonedx_with_pypi_purls_and_the_same_bytes_each_time() -> None:
    graph = sbom.closure(["a-pkg[fast]"], LOCK, _requires_of)
    text = sbom.render(sbom.build_bom(("proj", "0.1"), {"a-pkg"}, graph, LOCK))
    assert text == sbom.render(sbom.build_bom(("proj", "0.1"), {"a-pkg"}, graph, LOCK))
    bom = json.loads(text)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.5")
    assert [c["purl"] for c in bom["components"]] == [
        "pkg:pypi/a-pkg@1.0",
        "pkg:pypi/b@2.0",
        "pkg:pypi/c@3.0",
    ]
    edges = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert edges["pkg:pypi/proj@0.1"] == ["pkg:pypi/a-pkg@1.0"]
    assert edges["pkg:pypi/c@3.0"] == ["pkg:pypi/b@2.0"]
    other = sbom.build_bom(("proj", "0.1"), {"a-pkg"}, graph, {**LOCK, "b": "2.1"})
    assert other["serialNumber"] != bom["serialNumber"]


def test_an_installed_version_other_than_the_lock_is_an_error() -> None:
    with pytest.raises(sbom.SbomError, match=r"b: installed 2\.0, locked 2\.5"):
        sbom.closure(["a-pkg"], {**LOCK, "b": "2.5"}, _requires_of)


def test_a_requirement_missing_from_the_lock_is_an_error() -> None:
    lock = {k: v for k, v in LOCK.items() if k != "b"}
    with pytest.raises(sbom.SbomError, match="b is required but not pinned"):
        sbom.closure(["a-pkg"], lock, _requires_of)


def test_a_malformed_lock_line_is_named() -> None:
    with pytest.raises(sbom.SbomError, match="lock line 2"):
        sbom.parse_lock("a==1\nb>=2\n")


def test_the_committed_sbom_matches_the_lock() -> None:
    assert sbom.SBOM.read_text() == sbom.generate()
