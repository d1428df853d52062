"""The demo's live progress bars and its closing summary, from the task view of the API.

Rendering is pure (`render`, `summary_lines` return text); `Progress` only writes it,
redrawing in place on a terminal and printing a line every few seconds otherwise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

from ops.demo_env import StackPlan

BAR = 40
PLAIN_EVERY_S = 5.0


def bar(part: int, whole: int, width: int = BAR) -> str:
    filled = 0 if whole <= 0 else min(width, round(width * part / whole))
    return "#" * filled + "-" * (width - filled)


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def render(task: Mapping[str, Any], elapsed_s: float, rate: float) -> list[str]:
    p = task.get("progress") or {}
    total = int(p.get("total") or 0)
    runtime = task.get("runtime") or {}
    released = int(runtime.get("released") or 0)
    active = max(0, released - int(p.get("finished") or 0))
    waves = task.get("waves") or []
    wave = f"wave {runtime.get('current_wave', 1)}/{len(waves) + 1}"
    hold = f" hold: {runtime['hold']}" if runtime.get("hold") else ""
    rows = [
        f"task {str(task.get('id', ''))[:12]}  {task.get('status', '?'):<14} {wave}{hold}"
        f"   elapsed {clock(elapsed_s)}   {rate:,.0f} devices/s",
        f"  released  [{bar(released, total)}] {released:>9,}/{total:,}",
        f"  succeeded [{bar(int(p.get('succeeded') or 0), total)}] {int(p.get('succeeded') or 0):>9,}",
        f"  failed    [{bar(int(p.get('failed') or 0), total)}] {int(p.get('failed') or 0):>9,}",
        f"  in flight [{bar(active, total)}] {active:>9,}",
    ]
    return rows


class Progress:
    """Draws `render` on `out`; keeps the last few samples for a recent completion rate."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out, self.total = out, total
        self.tty = out.isatty()
        self.samples: deque[tuple[float, int]] = deque(maxlen=20)
        self.drawn = 0
        self.last_plain = -PLAIN_EVERY_S

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return 0.0 if t1 <= t0 else (n1 - n0) / (t1 - t0)

    def show(self, task: Mapping[str, Any], elapsed_s: float) -> None:
        finished = int((task.get("progress") or {}).get("finished") or 0)
        self.samples.append((elapsed_s, finished))
        rows = render(task, elapsed_s, self.rate())
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            self.out.write("".join(f"\x1b[2K{row}\n" for row in rows))
            self.drawn = len(rows)
        elif elapsed_s - self.last_plain >= PLAIN_EVERY_S or task.get("status") in (
            "Success",
            "Fail",
            "PartialSuccess",
            "Stopped",
        ):
            p = task.get("progress") or {}
            self.out.write(
                f"{rows[0]}   finished {int(p.get('finished') or 0):,}/{self.total:,}"
                f" (ok {int(p.get('succeeded') or 0):,}, failed {int(p.get('failed') or 0):,})\n"
            )
            self.last_plain = elapsed_s
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()


def summary_lines(
    task: Mapping[str, Any],
    elapsed_s: float,
    devices: Mapping[str, Any],
    plan: StackPlan,
    metrics: Mapping[str, str],
) -> list[str]:
    p = task.get("progress") or {}
    finished = int(p.get("finished") or 0)
    lines = [
        "",
        f"Rollout {task.get('id', '?')}: {task.get('status', 'unknown')}"
        f" ({task.get('reason') or 'no reason given'})",
        f"  devices        {int(p.get('total') or 0):,}"
        f"   finished {finished:,}   succeeded {int(p.get('succeeded') or 0):,}"
        f"   failed {int(p.get('failed') or 0):,}   cancelled {int(p.get('cancelled') or 0):,}",
        f"  duration       {elapsed_s:.1f} s   ({finished / elapsed_s if elapsed_s else 0:,.1f} devices/s)",
        "  final states   "
        + ", ".join(f"{k} {v:,}" for k, v in (task.get("counts") or {}).get("states", {}).items()),
    ]
    causes = task.get("failure_causes") or []
    if causes:
        lines.append("  failure causes")
        lines += [f"    {c['count']:>7,}  [{c['code']:>2}] {c['message']}" for c in causes]
    outcomes = devices.get("outcomes") or {}
    if outcomes:
        lines.append(
            "  devices say    " + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
        )
    durations = devices.get("durations_s") or {}
    if durations:
        lines.append(
            "  per device     command -> result "
            + ", ".join(f"{k} {v:.2f}s" for k, v in durations.items())
        )
    lines += [
        "",
        "Where to look next",
        f"  API docs       {plan.api_url}/docs   (OpenAPI: {plan.api_url}/v1/openapi.json)",
        f"  this task      {plan.api_url}/v1/tasks/{task.get('id', '')}"
        f"   (read key: {plan.read_key})",
        *(f"  metrics        {name:<14} {url}" for name, url in metrics.items()),
        f"  service logs   {plan.log_dir}/",
    ]
    return lines
