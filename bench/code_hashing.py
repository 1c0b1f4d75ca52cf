"""The stage cache's code hashing: CPU seconds to hash the reference pipeline's stage functions
and gates in a fresh process (what every cold run and every ``mlflow run`` stage pays once).

    python bench/code_hashing.py [--repeat 5] [--code DIR ...]

Each ``--code`` is a checkout whose ``mlflow_pipeline`` is imported instead of this one (e.g. a
``git worktree`` of an older commit); the checkouts are run alternately. Prints each run and the
median per checkout. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import time
from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.pipeline import load_pipeline
from mlflow_pipeline.config import load_config
stages = load_pipeline(load_config([])).stages
objects = [f for s in stages for f in (s.func, s.gate) if f is not None]
started = time.process_time()
for obj in objects:
    cache.code_hashes([obj])
print(round(time.process_time() - started, 3), len(objects))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--code", nargs="*", default=[str(ROOT)])
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {code: [] for code in args.code}
    for _ in range(args.repeat):
        for code in args.code:
            env = {**os.environ, "PYTHONPATH": code}
            out = subprocess.run(
                # In the checkout: `python -c` puts the working directory first on sys.path.
                [sys.executable, "-c", PROBE],
                env=env,
                cwd=code,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            seconds[code].append(float(out[0]))
            print(f"{code}: {out[0]} s CPU for {out[1]} functions")
    for code, values in seconds.items():
        print(f"median {code}: {statistics.median(values):.3f} s CPU")


if __name__ == "__main__":
    main()
