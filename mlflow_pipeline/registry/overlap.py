"""Which test rows the champion trained on.

The champion is re-scored on this run's test set. When this run split other data than the
champion's run did (a new day's batch plus the history, another ``split.random_state``,
``seed: null``), some of today's test rows were in the champion's training data: scored on
rows it has seen, a champion looks better than it is, and a better challenger is kept out. Both
models are then compared on the test rows the champion did not train on.

A row is "seen" when a row of the champion's training data has the same values in every column
both tables have (the target included). The champion's training data is found through its
lineage (``lineage.json``): the frames the stage that made its model read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlflow_pipeline.registry.comparison import Predictions


@dataclass(frozen=True)
class TrainingOverlap:
    """``rows``: a mask of the test rows the champion did not train on (the rows compared);
    ``seen``: how many it did; ``note``: what was done, in plain words."""

    rows: np.ndarray
    seen: int
    note: str

    @property
    def compared(self) -> int:
        return int(self.rows.sum())

    def of(self, predictions: Predictions) -> Predictions:
        """``predictions`` on the compared rows only."""
        return Predictions(
            np.asarray(predictions.y_pred)[self.rows],
            None if predictions.proba is None else np.asarray(predictions.proba)[self.rows],
            predictions.classes,
        )

    def as_dict(self) -> dict[str, Any]:
        """For promotion.json: the note and the rows."""
        return {
            "note": self.note,
            "rows_seen_by_champion": self.seen,
            "rows_compared": self.compared,
            "rows": len(self.rows),
        }


def training_inputs(lineage: dict[str, Any], kinds: dict[str, str]) -> dict[str, str]:
    """``{dataset: run id}``: the frames the stage that made the model of ``lineage`` read
    (``kinds``: each dataset's kind in the pipeline declaration); empty when the lineage has no
    such stage."""
    models = {name for name, kind in kinds.items() if kind == "model"}
    for stage in (lineage.get("stages") or {}).values():
        if models & set(stage.get("outputs") or {}):
            return {
                name: run_id
                for name, run_id in (stage.get("inputs_from") or {}).items()
                if kinds.get(name) == "frame"
            }
    return {}


def same_training_data(
    champion: dict[str, Any], challenger: dict[str, Any], kinds: dict[str, str]
) -> bool:
    """Did both lineages train on the same frames (by content digest)? Then the split was the
    same, and neither model has seen a test row the other has not."""
    mine, theirs = training_inputs(challenger, kinds), training_inputs(champion, kinds)
    if not mine or set(mine) != set(theirs):
        return False
    ours = challenger.get("data_digests") or {}
    other = champion.get("data_digests") or {}
    return all(ours.get(name) and ours.get(name) == other.get(name) for name in mine)


def training_overlap(test: pd.DataFrame, trained_on: list[pd.DataFrame]) -> TrainingOverlap | None:
    """The test rows found in ``trained_on`` (the champion's training frames), or None when
    there are none. Rows are compared on the columns both have; numbers as float64 (a column
    read as int64 one day and float64 the next still matches), anything else as text."""
    seen = np.zeros(len(test), dtype=bool)
    for train in trained_on:
        columns = [c for c in test.columns if c in train.columns]
        if not columns or not len(train):
            continue
        seen |= np.isin(_row_hashes(test[columns]), _row_hashes(train[columns]))
    count = int(seen.sum())
    if not count:
        return None
    rows = ~seen
    if rows.any():
        note = (
            f"the champion trained on {count} of the {len(test)} test rows: both models "
            f"compared on the other {int(rows.sum())}"
        )
    else:
        note = f"the champion trained on all {len(test)} test rows: no row to compare it on"
    return TrainingOverlap(rows=rows, seen=count, note=note)


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of ``frame``'s values (missing values all alike)."""
    columns = {}
    for name, values in frame.reset_index(drop=True).items():
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            columns[name] = values.astype("float64")
        else:
            columns[name] = values.astype("string").fillna("\x00<NA>")
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy()
