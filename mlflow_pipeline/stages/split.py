"""split: hold out a test set, stratified on the target for classification."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import Task
from mlflow_pipeline.errors import StageError

STAGE = "split"


def split(cfg: DictConfig, validated: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Returns ``{"train": frame, "test": frame}`` with fresh 0..n-1 indexes.

    Raises StageError when the data is too small to split as configured.
    """
    from sklearn.model_selection import train_test_split  # here: see stages/train.py

    target = cfg.data.target
    stratify = None
    if cfg.split.stratify and Task(cfg.data.task) is Task.classification:
        stratify = validated[target]
    try:
        train, test = train_test_split(
            validated,
            test_size=cfg.split.test_size,
            random_state=cfg.split.random_state,
            stratify=stratify,
        )
    except ValueError as exc:
        hint = ""
        if stratify is not None:
            counts = stratify.value_counts()
            rare = counts[counts < 2]
            if len(rare) and _looks_like_a_quantity(stratify, len(rare)):
                hint = (
                    f"; target '{target}' has {len(counts)} distinct numbers in "
                    f"{len(validated)} rows, {len(rare)} of them once: if it is a quantity, "
                    "set data.task=regression"
                )
            elif len(rare):
                shown = ", ".join(f"{k!r} ({v} row)" for k, v in rare.head(5).items())
                hint = (
                    f"; class(es) with fewer than 2 rows: {shown}. Drop or merge them, or "
                    "set split.stratify=false (their test rows then count as wrong)"
                )
        raise StageError(f"cannot split {len(validated)} rows: {exc}{hint}", stage=STAGE) from exc
    return {"train": train.reset_index(drop=True), "test": test.reset_index(drop=True)}


def _looks_like_a_quantity(target: pd.Series, once: int) -> bool:
    """Numbers most of whose distinct values occur once: a regression target, not classes."""
    distinct = target.nunique()
    return pd.api.types.is_numeric_dtype(target) and distinct > 20 and once > distinct / 2
