"""The promotion rule's paired bootstrap alone, in this process (not a whole-pipeline ratio):

    python bench/bootstrap.py [--rows 200000] [--resamples 1000] [--repeat 2] [--threads 1 2]

Two binary classifiers' scores on ``--rows`` test rows (rounded to 3 digits, so there are ties
as with tree models), roc_auc, the framework's defaults otherwise, under each ``--threads``
limit (what the engine gives the register stage: 2 on an idle 2-core machine). Prints seconds
per call and the interval, which must not change when the code gets faster or the threads
change.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sklearn  # noqa: F401  (its OpenMP runtime: the pool whose limit sets the threads)
from threadpoolctl import threadpool_limits

from mlflow_pipeline.registry.comparison import Predictions, paired_bootstrap


def _predictions(score: np.ndarray) -> Predictions:
    return Predictions((score > 0.5).astype(int), np.c_[1 - score, score], [0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, args.rows)
    a = np.round(np.clip(y * 0.3 + rng.random(args.rows) * 0.7, 0, 1), 3)
    b = np.round(np.clip(y * 0.25 + rng.random(args.rows) * 0.75, 0, 1), 3)
    for _ in range(args.repeat):
        for threads in args.threads:
            with threadpool_limits(threads):  # as engine/threads.py limits a stage
                started = time.perf_counter()
                result = paired_bootstrap(
                    "roc_auc", y, _predictions(a), _predictions(b),
                    greater_is_better=True, resamples=args.resamples,
                )  # fmt: skip
            print(
                f"{args.rows:,} rows x {args.resamples} resamples, {threads} thread(s): "
                f"{time.perf_counter() - started:.2f} s, "
                f"interval [{result.low:.6f}, {result.high:.6f}]"
            )


if __name__ == "__main__":
    main()
