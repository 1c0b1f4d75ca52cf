"""The validate stage as an MLflow project: all logic lives in mlflow_pipeline."""

import sys

from mlflow_pipeline.cli import project_main

if __name__ == "__main__":
    raise SystemExit(project_main(["validate", *sys.argv[1:]]))
