"""``python -m mlflow_pipeline.cli``: what the MLproject entry points call."""

import os
import sys

from mlflow_pipeline.cli.startup import (
    SQL_STORE_MODULES,
    freeze_at_exit,
    preload,
    started_by_runner,
)

# What an entry point runs (the runner for `main`, one stage for the others), imported with
# the collector off: each `mlflow run` of runner=projects is a new process.
ENTRY_POINT_MODULES = (
    "mlflow_pipeline.cli.project",
    "mlflow_pipeline.engine.runner",
    "mlflow_pipeline.engine.projects",
    "sklearn",
)

if __name__ == "__main__":
    freeze_at_exit()
    embedded = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:").startswith("sqlite:")
    try:
        preload(*ENTRY_POINT_MODULES, *(SQL_STORE_MODULES if embedded else ()))
    except KeyboardInterrupt:  # before any run exists: nothing to mark KILLED
        if not started_by_runner(sys.argv[1:]):
            print("mlflow-pipeline: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    from mlflow_pipeline.cli.project import project_main

    raise SystemExit(project_main())
