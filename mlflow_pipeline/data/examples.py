"""Example data for the README walkthroughs: a synthetic customer table to train, score and
retrain on (``mlflow-pipeline example-data customers.csv``).

Columns: ``income`` and ``age`` (numeric, with gaps), ``plan`` (basic/plus/premium, with gaps)
and the 0/1 target ``label``, which depends on all three plus noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def customers(rows: int = 300, *, seed: int = 0) -> pd.DataFrame:
    """``rows`` customers drawn with ``seed`` (the same seed gives the same table)."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50.0, 15.0, rows)
    age = rng.integers(18, 80, rows).astype(float)
    plan = rng.choice(["basic", "plus", "premium"], rows)
    logit = 0.08 * (income - 50.0) - 0.03 * (age - 50.0) + np.where(plan == "premium", 1.0, 0.0)
    label = (logit + rng.normal(0.0, 0.7, rows) > 0).astype(int)
    frame = pd.DataFrame({"income": income, "age": age, "plan": plan, "label": label})
    frame.loc[rng.choice(rows, rows // 10, replace=False), "income"] = np.nan
    frame.loc[rng.choice(rows, rows // 20, replace=False), "age"] = np.nan
    frame.loc[rng.choice(rows, rows // 12, replace=False), "plan"] = None
    return frame


def write_customers(path: str | Path, rows: int = 300, *, seed: int = 0) -> Path:
    """``customers(rows, seed=seed)`` as a CSV file at ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    customers(rows, seed=seed).to_csv(path, index=False)
    return path
