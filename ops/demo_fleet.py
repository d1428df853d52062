"""The fleet simulator's command line: a fleet with a mix of device kinds, as its own
process (for CPU parallelism). The demo and the rollout benchmark run it through
`ops.fleet_group`; on its own:

    python -m ops.demo_fleet --size 10000 [--prefix demo-ab12] [--mix offline_back=5,...]
    python -m ops.demo_fleet --size 10000 --mix none,fails=5 --fail-code 10 --until-finished
    python -m ops.demo_fleet --size 200000 --mode multiplexed --mix none --duration-s 600

It connects the fleet (devices <prefix>-<index>, indexes from `--first`, so one fleet can
be split over several processes), prints `{"ready": ...}` as one JSON line, then a JSON
report line every `--report-every-s` seconds, and a final `{"final": ...}` line when
stdin closes, on SIGTERM or Ctrl-C, after `--duration-s`, or with `--until-finished`
once every device has finished. Settings (broker addresses) come from the OTA_ variables.

The mix assigns each device one kind by a stable draw from its id, so a re-run misbehaves
in the same devices:
- `offline_back`: offline for a while after the rollout starts, back within the window;
- `offline_gone`: offline past the task's online window;
- `on_target`: already runs the target version;
- `unsupported`: runs a source version the package does not allow;
- `fails`: reports a device result code (spread over the IoTDA codes, or `--fail-code`);
- `resume`: its download is cut once and resumed with a Range request;
- `silent`: never answers a version query (none by default);
- the rest are well-behaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import uvloop

from devices.behaviour import Behaviour
from devices.fleet import BehaviourOf, Fleet, FleetConfig, Mode
from ota.settings import CommonSettings

UNSUPPORTED_VERSION = "0.9"
FAIL_CODES = (1, 2, 4, 5, 6, 7, 8, 9, 10, 255)


@dataclass(frozen=True)
class Mix:
    """Percent of the fleet of each kind; the remainder is well-behaved."""

    offline_back: float = 5.0
    offline_gone: float = 1.0
    on_target: float = 5.0
    unsupported: float = 2.0
    fails: float = 2.0
    resume: float = 5.0
    silent: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Mix:
        """`offline_back=5,fails=1` (percent); unnamed kinds keep their defaults; `none`: all
        0, and `none,fails=5` starts from all 0."""
        items = [p.strip() for p in spec.split(",") if p.strip()]
        values: dict[str, float] = {}
        if items[:1] == ["none"]:
            values = {f.name: 0.0 for f in fields(cls)}
            items = items[1:]
        names = {f.name for f in fields(cls)}
        for item in items:
            name, sep, raw = item.partition("=")
            if not sep or name not in names:
                raise ValueError(
                    f"mix entry {item!r} is not <kind>=<percent>; kinds: {sorted(names)}"
                )
            try:
                values[name] = float(raw)
            except ValueError:
                raise ValueError(f"mix entry {item!r}: {raw!r} is not a number") from None
            if not 0 <= values[name] <= 100:
                raise ValueError(f"mix entry {item!r} is not within 0..100")
        mix = cls(**values)
        if mix.total() > 100:
            raise ValueError(f"the mix adds up to {mix.total()}%, over 100%")
        return mix

    def total(self) -> float:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def kind_of(device_id: str, mix: Mix) -> str:
    """The device's kind by a stable draw in [0, 100) from its id."""
    draw = zlib.crc32(device_id.encode()) / 2**32 * 100
    edge = 0.0
    for name, share in mix.as_dict().items():
        edge += share
        if draw < edge:
            return name
    return "ok"


def behaviour_of(
    mix: Mix,
    *,
    target: str,
    package_size: int,
    back_after_s: float,
    gone_for_s: float,
    fw_version: str = "1.0",
    fail_code: int | None = None,
    slow_s: float = 0.0,
) -> BehaviourOf:
    """Each device's behaviour from its kind; every device starts on `fw_version` (unless
    its kind says otherwise) and waits `slow_s` before each answer."""

    def of(_index: int, device_id: str) -> Behaviour:
        kind = kind_of(device_id, mix)
        spread = zlib.crc32(device_id.encode()[::-1])
        base = Behaviour(fw_version=fw_version, slow_s=slow_s)
        if kind == "offline_back":
            return replace(base, offline_for_s=back_after_s * (0.5 + (spread % 100) / 200))
        if kind == "offline_gone":
            return replace(base, offline_for_s=gone_for_s)
        if kind == "on_target":
            return replace(base, fw_version=target)
        if kind == "unsupported":
            return replace(base, fw_version=UNSUPPORTED_VERSION)
        if kind == "fails":
            code = FAIL_CODES[spread % len(FAIL_CODES)] if fail_code is None else fail_code
            return replace(base, fail_with=code)
        if kind == "resume":
            return replace(base, drop_download_at=max(1, package_size // 3))
        if kind == "silent":
            return replace(base, answer_version_query=False)
        return replace(base, progress_every_pct=50)

    return of


def kinds(device_ids: list[str], mix: Mix) -> dict[str, int]:
    counts: dict[str, int] = {}
    for device_id in device_ids:
        kind = kind_of(device_id, mix)
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


# Kinds whose devices end FAILED whatever the platform does (gone past the online window,
# a source version the package refuses, a device that reports a failure code or never
# answers the version query).
FAILING_KINDS = frozenset({"offline_gone", "unsupported", "fails", "silent"})


def verdict(task: Mapping[str, object], kinds: Mapping[str, int]) -> list[str]:
    """Why the finished task is not what the fleet's mix predicts ([] when it is)."""
    failed = sum(n for kind, n in kinds.items() if kind in FAILING_KINDS)
    succeeded = sum(kinds.values()) - failed
    status = "Success" if not failed else "Fail" if not succeeded else "PartialSuccess"
    progress = task.get("progress")
    got = progress if isinstance(progress, Mapping) else {}
    problems = []
    if task.get("status") != status:
        problems.append(f"the task ended {task.get('status')!r}, the mix predicts {status!r}")
    for name, wanted in (("succeeded", succeeded), ("failed", failed)):
        if got.get(name) != wanted:
            problems.append(f"{got.get(name)} devices {name}, the mix predicts {wanted}")
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.demo_fleet", description=__doc__)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--prefix", default="sim", help="device ids are <prefix>-<0000000>")
    parser.add_argument(
        "--first", type=int, default=0, help="index of the first device (a fleet's slice)"
    )
    parser.add_argument(
        "--own-downlinks",
        action="store_true",
        help="multiplexed: subscribe per device, not to the wildcard (several processes)",
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.CONNECTIONS.value)
    parser.add_argument("--mux-connections", type=int, default=4)
    parser.add_argument(
        "--mix", default="", help="e.g. offline_back=5,fails=2, none, or none,fails=5"
    )
    parser.add_argument("--fw-version", default="1.0", help="the devices' version at start")
    parser.add_argument(
        "--fail-code", type=int, help="the result code `fails` devices report (default: spread)"
    )
    parser.add_argument("--slow-s", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--target", default="2.0", help="the version the rollout installs")
    parser.add_argument("--package-size", type=int, default=1 << 20)
    parser.add_argument("--back-after-s", type=float, default=30.0)
    parser.add_argument("--gone-for-s", type=float, default=3600.0)
    parser.add_argument("--connects-in-parallel", type=int, default=200)
    parser.add_argument(
        "--download-slots",
        type=int,
        default=2048,
        help="downloads in flight at once (one connection each); the rest wait",
    )
    parser.add_argument("--report-every-s", type=float, default=2.0)
    parser.add_argument(
        "--duration-s", type=float, default=0.0, help="stop after this long (0: no limit)"
    )
    parser.add_argument(
        "--until-finished", action="store_true", help="stop once every device has finished"
    )
    args = parser.parse_args(argv)
    try:
        args.mix = Mix.parse(args.mix)
    except ValueError as exc:
        parser.error(str(exc))
    if args.size < 1:
        parser.error("--size must be at least 1")
    if args.first < 0:
        parser.error("--first must not be negative")
    if args.slow_s < 0 or args.duration_s < 0 or args.report_every_s <= 0:
        parser.error("--slow-s and --duration-s must not be negative, --report-every-s positive")
    return args


def emit(line: Mapping[str, object]) -> None:
    print(json.dumps(line), flush=True)


async def run(args: argparse.Namespace) -> None:
    config = FleetConfig.from_settings(
        CommonSettings.from_env(),
        args.size,
        mode=Mode(args.mode),
        prefix=args.prefix,
        first=args.first,
        own_downlinks=args.own_downlinks,
        mux_connections=args.mux_connections,
        connects_in_parallel=args.connects_in_parallel,
        download_slots=args.download_slots,
        behaviour_of=behaviour_of(
            args.mix,
            target=args.target,
            package_size=args.package_size,
            back_after_s=args.back_after_s,
            gone_for_s=args.gone_for_s,
            fw_version=args.fw_version,
            fail_code=args.fail_code,
            slow_s=args.slow_s,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: None if os.read(stdin, 64) else stop.set())
    started = time.monotonic()
    async with Fleet(config) as fleet:
        emit(
            {
                "ready": True,
                "online": fleet.online,
                "connect_s": round(time.monotonic() - started, 2),
                "kinds": kinds(config.device_ids(), args.mix),
            }
        )
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.report_every_s)
            except TimeoutError:
                emit({"report": fleet.report().as_dict()})
            if args.duration_s and time.monotonic() - started >= args.duration_s:
                break
            if args.until_finished and fleet.finished() == args.size:
                break
        emit({"final": fleet.report().as_dict()})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
