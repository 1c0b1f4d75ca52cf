"""The reference pipeline's stages: pure functions of typed DataFrames and config.

Nothing in here talks to MLflow; the run wrapper in ``mlflow_pipeline.engine.stage`` does that.
"""
