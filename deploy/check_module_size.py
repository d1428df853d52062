"""Fails when a project Python module is longer than the limit (600 lines): one concept per
module, split before it grows past it. Part of `make lint`.

    .venv/bin/python deploy/check_module_size.py [--max-lines 600] [ROOT]

Every `*.py` under ROOT (the repository by default) is counted, except in hidden
directories (`.venv`, `.tools`, caches), build output and run artefacts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINES = 600
# Not the project's source: build output, installed metadata and what runs leave behind.
SKIP_DIRS = frozenset({"__pycache__", "build", "var", "test-artefacts", "node_modules"})


def modules(root: Path) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not d.startswith(".") and d not in SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(directory) / name


def line_count(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def too_long(root: Path, max_lines: int) -> list[tuple[Path, int]]:
    found = []
    for path in modules(root):
        lines = line_count(path)
        if lines > max_lines:
            found.append((path.relative_to(root), lines))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent
    )
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    args = parser.parse_args(argv)
    if args.max_lines < 1:
        parser.error("--max-lines must be at least 1")
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    found = too_long(args.root, args.max_lines)
    for path, lines in found:
        print(f"{path}: {lines} lines (at most {args.max_lines}): split it by concept")
    if not found:
        print(f"module size: every Python module has at most {args.max_lines} lines")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
