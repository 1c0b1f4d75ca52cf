"""The framework against a bare script doing the same work, as whole processes.

    python bench/run.py [--rows 1000000] [--repeat 1] [--out docs/benchmarks.md]
                        [--context-rows 100000] [--no-warm] [--profile] [--background 1]
    python bench/run.py --cache [--rows 1000000] [--repeat 1] [--out docs/benchmarks.md]
    python bench/run.py --sweep [--sweep-rows 100000] [--repeat 1] [--out docs/benchmarks.md]
    python bench/run.py --gates [--rows 1000000] [--repeat 5] [--out docs/benchmarks.md]

The command line of every benchmark; each lives in its own module, on the shared harness of
``bench/common.py``:

- (no flag) ``bench/full_pipeline.py``: the full pipeline through the framework against
  ``bench/bare.py``, at ``--rows`` and ``--context-rows``.
- ``--cache`` ``bench/stage_cache.py``: a cold run, the no-op rerun and a partial rerun.
- ``--sweep`` ``bench/sweeps.py``: an 8-job sweep, sequential against joblib.
- ``--gates`` ``bench/gates.py`` (in this process): the data gates against plain pandas
  checks; ``--repeat`` defaults to 5 there.

Each writes its own section of ``--out`` between its markers and keeps the rest of the file.
``--background N`` runs N CPU-bound busy-loop processes during every variant (the full
pipeline then writes its busy-machine section).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import ROOT, background_load
from full_pipeline import run_full_pipeline
from gates import GATES_REPEAT, run_gates
from stage_cache import run_cache
from sweeps import SWEEP_ROWS, run_sweep


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per variant and size (1; --gates: 5)"
    )
    parser.add_argument(
        "--context-rows", type=int, default=100_000, help="a second, smaller size (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--no-warm", action="store_true", help="skip the runs on a pre-created store schema"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one framework run at --rows"
    )
    parser.add_argument(
        "--projects", action="store_true", help="also the framework with runner=projects"
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="measure the stage cache (cold, no-op and partial reruns) instead",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="measure an 8-job sweep, sequential against parallel (joblib), instead",
    )
    parser.add_argument(
        "--sweep-rows", type=int, default=SWEEP_ROWS, help="rows of the sweep's CSV"
    )
    parser.add_argument(
        "--background",
        type=int,
        default=0,
        help="CPU-bound busy-loop processes running during every variant (the busy-machine "
        "mode; the full pipeline writes its own section)",
    )
    parser.add_argument(
        "--gates",
        action="store_true",
        help="measure the data gates against plain pandas checks (bench/gates.py) instead",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.gates:
        run_gates(args.rows, GATES_REPEAT if args.repeat is None else args.repeat, args.out)
        return
    if args.repeat is None:
        args.repeat = 1
    with background_load(args.background):
        if args.cache:
            run_cache(args)
        elif args.sweep:
            run_sweep(args)
        else:
            run_full_pipeline(args)


if __name__ == "__main__":
    main()
