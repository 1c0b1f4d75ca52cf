"""mlflow_pipeline: tabular ML from experiment to production with MLflow, Hydra and pandera."""

__version__ = "0.1.0"
