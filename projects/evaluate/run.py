"""The evaluate stage as an MLflow project: all logic lives in mlflow_pipeline."""

import sys
from pathlib import Path

# Import the package from this checkout, also in an environment that only has the dependencies.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mlflow_pipeline.cli.app import project_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(project_main(["evaluate", *sys.argv[1:]]))
