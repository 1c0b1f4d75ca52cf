"""The register stage as an MLflow project: all logic lives in mlflow_pipeline."""

import sys

from mlflow_pipeline.cli import project_main

if __name__ == "__main__":
    raise SystemExit(project_main(["register", *sys.argv[1:]]))
