"""The fleet command's mix: parsing, and each kind's behaviour with the command's options."""

from __future__ import annotations

import pytest

from devices.behaviour import Behaviour
from ops.demo_fleet import FAIL_CODES, UNSUPPORTED_VERSION, Mix, behaviour_of, kind_of, parse_args

IDS = [f"sim-{n:07d}" for n in range(2_000)]


def test_none_then_kinds_starts_from_a_well_behaved_fleet() -> None:
    mix = Mix.parse("none,fails=5")
    assert mix.as_dict() == {**Mix.parse("none").as_dict(), "fails": 5.0}
    assert Mix.parse("fails=5").offline_back == Mix().offline_back  # others keep defaults
    assert Mix.parse("") == Mix()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fails", "not <kind>=<percent>"),
        ("loud=5", "not <kind>=<percent>"),
        ("fails=x", "not a number"),
        ("fails=101", "within 0..100"),
        ("none,fails=60,silent=50", "over 100%"),
    ],
)
def test_a_bad_mix_is_named(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mix.parse(spec)


def _behaviours(
    mix: Mix, fw_version: str = "1.0", fail_code: int | None = None, slow_s: float = 0.0
) -> dict[str, list[Behaviour]]:
    of = behaviour_of(
        mix,
        target="2.0",
        package_size=3_000,
        back_after_s=10.0,
        gone_for_s=100.0,
        fw_version=fw_version,
        fail_code=fail_code,
        slow_s=slow_s,
    )
    out: dict[str, list[Behaviour]] = {}
    for index, device_id in enumerate(IDS):
        out.setdefault(kind_of(device_id, mix), []).append(of(index, device_id))
    return out


def test_every_kind_with_the_commands_options() -> None:
    mix = Mix.parse("none,fails=10,silent=10,unsupported=10,on_target=10")
    found = _behaviours(mix, fw_version="1.1", fail_code=10, slow_s=0.5)
    assert set(found) == {"fails", "silent", "unsupported", "on_target", "ok"}
    assert {b.fail_with for b in found["fails"]} == {10}
    assert not any(b.answer_version_query for b in found["silent"])
    assert {b.fw_version for b in found["unsupported"]} == {UNSUPPORTED_VERSION}
    assert {b.fw_version for b in found["on_target"]} == {"2.0"}
    assert {b.fw_version for b in found["ok"]} == {"1.1"}
    everyone = [b for kind in found.values() for b in kind]
    assert {b.slow_s for b in everyone} == {0.5}


def test_failing_devices_spread_over_the_codes_by_default() -> None:
    found = _behaviours(Mix.parse("none,fails=50"))
    codes = {b.fail_with for b in found["fails"]}
    assert codes == set(FAIL_CODES)


def test_bad_options_are_usage_errors() -> None:
    for argv in (
        ["--size", "0"],
        ["--size", "5", "--duration-s", "-1"],
        ["--size", "5", "--mix", "fails"],
    ):
        with pytest.raises(SystemExit) as exited:
            parse_args(argv)
        assert exited.value.code == 2
    args = parse_args(["--size", "5", "--until-finished", "--fail-code", "10"])
    assert (args.prefix, args.until_finished, args.fail_code) == ("sim", True, 10)
    assert parse_args(["--size", "5", "--mode", "multiplexed"]).mode == "multiplexed"
