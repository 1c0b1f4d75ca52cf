"""``mlflow-pipeline``'s entry point: a rerun with nothing changed ends here, before MLflow,
pandas and scikit-learn are imported (engine/noop.py); everything else goes to ``cli.app``.
"""

from __future__ import annotations

import sys

# What makes a command line anything but one plain pipeline run: a sweep, a plan, help.
NOT_PLAIN = ("-m", "--multirun", "--dry-run", "--plan", "--help", "-h", "--hydra-help", "--cfg")


def fast_noop(args: list[str]) -> str | None:
    """The no-op message when ``args`` is a plain pipeline run that would be all cache hits
    (``cache.fast_noop``); None: run it normally. Never raises: any doubt runs normally."""
    if any(a in NOT_PLAIN or a.startswith("-") for a in args) or (args and "=" not in args[0]):
        return None  # flags and subcommands (score, serve, ...) are cli.app's
    import os

    if os.environ.get("MLFLOW_RUN_ID"):  # inside `mlflow run`: its run must be filled
        return None
    try:
        from mlflow_pipeline.config import load_config
        from mlflow_pipeline.engine.noop import find_noop

        stamp = find_noop(load_config(args))
    except Exception:  # a bad override, a missing file: the normal path says what is wrong
        return None
    return stamp.describe() if stamp is not None else None


def main() -> None:
    """``mlflow-pipeline [overrides]``, ``mlflow-pipeline SUBCOMMAND ...`` (see cli.app)."""
    message = fast_noop(sys.argv[1:])
    if message is not None:
        print(message)
        return
    from mlflow_pipeline.cli.app import main as app_main

    app_main()


if __name__ == "__main__":
    main()
