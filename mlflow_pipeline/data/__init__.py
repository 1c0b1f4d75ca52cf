"""Validation, drift and example data: pandas, pandera and scipy only, no MLflow."""
