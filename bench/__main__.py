"""``python -m bench [--only NAME ...] [--out bench/results]``: run the benchmarks, write CSV.

One CSV per benchmark (``<out>/<name>.csv``, columns in :data:`bench.harness.COLUMNS`),
a summary on stdout. The default run (every benchmark, quick variants) takes a few
minutes on two cores; ``--full`` adds the long variants (every VC voice pair).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import bench.fastpitch  # noqa: F401 - registers its benchmarks
import bench.quality  # noqa: F401 - registers its benchmarks
import bench.rvc  # noqa: F401 - registers its benchmarks
import bench.speed  # noqa: F401 - registers its benchmarks
import bench.wav2lip  # noqa: F401 - registers its benchmarks
from bench.harness import BENCHMARKS, DEFAULT_REPEATS, REPO_ROOT, run

DEFAULT_OUT = REPO_ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only this benchmark (repeatable or comma separated): {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the CSV files (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed calls per measurement; the median is reported (default: %(default)s)")
    parser.add_argument("--full", action="store_true", help="long variants too (every VC voice pair: ~10 min more)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, fn in BENCHMARKS.items():
            print(f"{name:12} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run(names, args.out, repeats=args.repeats, full=args.full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
