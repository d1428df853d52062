"""The CLI's pure pieces: option syntax parsers and rendering."""

from __future__ import annotations

import pytest

from ops import cli_render as render
from ops.cli import explain, parser
from ota import policy_specs as specs

NOW = 1_800_000_000_000


def test_wave_specs() -> None:
    assert specs.wave("10") == {"count": 10}
    assert specs.wave("5%") == {"percent": 5.0}
    assert specs.wave("10:90") == {"count": 10, "success_threshold_pct": 90.0}
    assert specs.wave("2%:95:approve") == {
        "percent": 2.0,
        "success_threshold_pct": 95.0,
        "approval": True,
    }


@pytest.mark.parametrize("spec", ["", "x", "10:y", "10:90:later", "1:2:3:4"])
def test_bad_wave_specs_name_the_option(spec: str) -> None:
    with pytest.raises(specs.SpecError, match="--wave"):
        specs.wave(spec)


def test_abort_window_ramp_timeout() -> None:
    assert specs.abort("20:50") == {"failure_pct": 20.0, "min_finished": 50}
    assert specs.abort("20:50:22")["cause"] == 22
    assert specs.window("22:00-04:00@sat,sun") == {
        "start": "22:00",
        "end": "04:00",
        "days": ["sat", "sun"],
    }
    assert specs.ramp("10,2,50,1000") == {
        "base_per_min": 10,
        "factor": 2.0,
        "every_successes": 50,
        "max_per_min": 1000,
    }
    assert specs.timeout("online_s=60") == ("online_s", 60)
    for bad, call in (("5", specs.abort), ("22-04", specs.window), ("1,2", specs.ramp)):
        with pytest.raises(specs.SpecError):
            call(bad)
    with pytest.raises(specs.SpecError, match="--timeout"):
        specs.timeout("online_s")


def test_schedule_times() -> None:
    assert specs.when("+30m", NOW) == NOW + 30 * 60_000
    assert specs.when("+1d", NOW) == NOW + 86_400_000
    assert specs.when("2027-01-15T08:00:00Z", 0) == 1_800_000_000_000
    assert specs.when("2027-01-15T09:00:00+01:00", 0) == 1_800_000_000_000
    with pytest.raises(specs.SpecError, match="time zone"):
        specs.when("2027-01-15T08:00:00", NOW)
    with pytest.raises(specs.SpecError, match="ISO 8601"):
        specs.when("tomorrow", NOW)


def test_table_and_bars() -> None:
    text = render.table(
        [{"id": "a", "n": 1, "tags": ["x", "y"]}, {"id": "bbb", "n": None, "tags": []}],
        ["id", "n", "tags"],
    )
    assert text.splitlines() == ["ID   N  TAGS", "a    1  x,y", "bbb  -  -"]
    assert render.table([], ["id"]) == "(none)"
    assert render.bar(5, 10, 10) == "#####....."
    assert render.bar(0, 0, 4) == "...."
    assert render.bar(20, 10, 4) == "####"


def test_task_screen_shows_every_status_and_causes() -> None:
    lines = render.task_screen(
        {
            "id": "t1",
            "status": "Processing",
            "progress": {"total": 10, "percent": 30.0},
            "counts": {"statuses": {"Success": 2, "Fail": 1, "Processing": 7}},
            "runtime": {"current_wave": 2, "released": 10},
            "waves": [{}],
            "failure_causes": [{"code": 22, "message": "Low battery", "count": 1}],
        }
    )
    text = "\n".join(lines)
    assert "wave 2/2" in text
    assert "released 10/10" in text
    for status in render.STATUSES:
        assert status in text
    assert "Low battery" in text
    success_line = next(line for line in lines if "Success" in line)
    assert success_line.endswith(" 2")


def test_task_screen_shows_a_continuous_task() -> None:
    base = {"id": "t1", "status": "Processing", "progress": {"total": 3}}
    follow = {"open": True, "end_time_ms": None, "joined": 2, "removed": 1}
    text = "\n".join(render.task_screen({**base, "continuous": follow}))
    assert "continuous: open until cancelled   joined 2   removed before release 1" in text
    ending = {**follow, "end_time_ms": 1_800_000_000_000}
    text = "\n".join(render.task_screen({**base, "continuous": ending}))
    assert "open until 2027-01-15 08:00:00" in text
    closed = {**follow, "open": False}
    assert "continuous: closed" in "\n".join(render.task_screen({**base, "continuous": closed}))
    assert "continuous" not in "\n".join(render.task_screen(base))


def test_task_screen_shows_the_link_to_a_rollback_both_ways() -> None:
    base = {"id": "t1", "status": "Stopped", "progress": {"total": 3}}
    linked = {"id": "r1", "status": "Processing", "progress": {"percent": 50.0}}
    text = "\n".join(render.task_screen({**base, "rollback": linked}))
    assert "rolled back by task r1: Processing, done 50.0%" in text
    text = "\n".join(render.task_screen({**base, "id": "r1", "rollback_of": "t1"}))
    assert "rollback of task t1" in text
    assert "rollback" not in "\n".join(render.task_screen(base))


def test_errors_are_explained() -> None:
    body = {
        "error": {"code": "unknown_group", "message": "group 'x' does not exist", "field": "groups"}
    }
    assert explain(422, body, "") == "unknown_group [groups]: group 'x' does not exist"
    assert "OTA_API_KEY" in explain(401, {"error": {"code": "unauthorized", "message": "m"}}, "")
    assert explain(502, None, "Bad Gateway") == "HTTP 502: Bad Gateway"


def test_parser_has_every_command() -> None:
    p = parser()
    for argv in (
        ["packages", "list"],
        ["devices", "show", "d1"],
        ["tasks", "watch", "t1", "--once"],
        ["tasks", "rollback", "t1"],
        ["tasks", "create", "--type", "firmware", "--package", "p", "--wave", "10", "--dry-run"],
    ):
        assert p.parse_args(argv).run is not None
