"""``mlflow-pipeline``'s entry point: a rerun with nothing changed ends here, before MLflow,
pandas and scikit-learn are imported (engine/noop.py); everything else goes to ``cli.app``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

# What makes a command line anything but one plain pipeline run: a sweep, a plan, help.
NOT_PLAIN = ("-m", "--multirun", "--dry-run", "--plan", "--help", "-h", "--hydra-help", "--cfg")


@dataclass(frozen=True)
class FirstLook:
    """What the command line says before the heavy imports: the no-op message, if every stage
    would be a cache hit (``cache.fast_noop``), and whether the store is a SQLite file."""

    noop: str | None = None
    embedded_store: bool = False


def fast_noop(args: list[str]) -> FirstLook:
    """Whether ``args`` is a plain pipeline run that would be all cache hits. Never raises: any
    doubt runs normally (``noop`` None)."""
    if any(a in NOT_PLAIN or a.startswith("-") for a in args) or (args and "=" not in args[0]):
        return FirstLook()  # flags and subcommands (score, serve, ...) are cli.app's
    if os.environ.get("MLFLOW_RUN_ID"):  # inside `mlflow run`: its run must be filled
        return FirstLook()
    try:
        from mlflow_pipeline.config import load_config
        from mlflow_pipeline.engine.noop import find_noop, store_of

        cfg = load_config(args)
        stamp = find_noop(cfg)
    except Exception:  # a bad override, a missing file: the normal path says what is wrong
        return FirstLook()
    return FirstLook(stamp.describe() if stamp is not None else None, store_of(cfg) is not None)


def main() -> None:
    """``mlflow-pipeline [overrides]``, ``mlflow-pipeline SUBCOMMAND ...`` (see cli.app)."""
    look = fast_noop(sys.argv[1:])
    if look.noop is not None:
        print(look.noop)
        return
    from mlflow_pipeline.cli.startup import SQL_STORE_MODULES, preload

    # mlflow, pandas, Hydra's app: ~1M objects the collector would walk again and again.
    preload("mlflow_pipeline.cli.app", *(SQL_STORE_MODULES if look.embedded_store else ()))
    from mlflow_pipeline.cli.app import main as app_main

    app_main()


if __name__ == "__main__":
    main()
