"""mlflow-pipeline's default Hydra configs (package data): ``pkg://mlflow_pipeline.conf``."""
