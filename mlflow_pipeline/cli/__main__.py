"""``python -m mlflow_pipeline.cli``: what the MLproject entry points call."""

from mlflow_pipeline.cli.project import project_main

if __name__ == "__main__":
    raise SystemExit(project_main())
