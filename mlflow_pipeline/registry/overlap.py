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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlflow_pipeline.registry.comparison import Predictions


@dataclass(frozen=True)
class TrainingOverlap:
    """``rows``: a mask of the test rows neither model trained on (the rows compared);
    ``seen``: how many the champion trained on; ``seen_by_challenger``: how many more the
    challenger did (duplicate records, split apart differently); ``note``: in plain words."""

    rows: np.ndarray
    seen: int
    seen_by_challenger: int
    note: str

    @property
    def compared(self) -> int:
        return int(self.rows.sum())

    def of(self, predictions: Predictions) -> Predictions:
        """``predictions`` on the compared rows only."""
        return predictions.on(self.rows)

    def as_dict(self) -> dict[str, Any]:
        """For promotion.json: the note and the rows."""
        return {
            "note": self.note,
            "rows_seen_by_champion": self.seen,
            "rows_seen_by_challenger_only": self.seen_by_challenger,
            "rows_compared": self.compared,
            "rows": len(self.rows),
        }


def training_inputs(lineage: dict[str, Any], kinds: dict[str, str]) -> dict[str, str]:
    """``{dataset: run id}``: the frames read by the stages that made a model in ``lineage``
    (every one: a stage that calibrates a trained model on frames of its own learnt from them
    too); ``kinds``: each dataset's kind in the pipeline declaration. Empty when there is
    none."""
    models = {name for name, kind in kinds.items() if kind == "model"}
    found = {}
    for stage in (lineage.get("stages") or {}).values():
        if models & set(stage.get("outputs") or {}):
            for name, run_id in (stage.get("inputs_from") or {}).items():
                if kinds.get(name) == "frame":
                    found[name] = run_id
    return found


def same_training_data(
    champion: dict[str, Any], challenger: dict[str, Any], kinds: dict[str, str]
) -> bool:
    """Did both lineages train on the same frames (the same datasets, by content digest)? Then
    neither model has seen a test row the other has not."""
    mine, theirs = training_inputs(challenger, kinds), training_inputs(champion, kinds)
    if not mine or set(mine) != set(theirs):
        return False
    ours = challenger.get("data_digests") or {}
    other = champion.get("data_digests") or {}
    return all(ours.get(name) and ours.get(name) == other.get(name) for name in mine)


def shares_columns(test: pd.DataFrame, frames: list[pd.DataFrame]) -> bool:
    """Can rows be matched at all: does a training frame have columns of the test set?"""
    return any(set(test.columns) & set(frame.columns) for frame in frames)


def training_overlap(
    test: pd.DataFrame,
    champion: Sequence[pd.DataFrame],
    challenger: Sequence[pd.DataFrame] = (),
) -> TrainingOverlap | None:
    """The test rows found in the champion's training frames (``champion``), and those found
    only in the challenger's (a duplicate record on both sides of this run's split); None when
    there are none. Rows are compared on the columns both tables have, values normalised
    (``_row_hashes``: a column read as int64 one day and float64 the next still matches)."""
    by_champion = _found(test, champion)
    by_challenger = _found(test, challenger) & ~by_champion
    count, more = int(by_champion.sum()), int(by_challenger.sum())
    if not count and not more:
        return None
    rows = ~(by_champion | by_challenger)
    share = f"all {len(test)}" if count == len(test) else f"{count} of the {len(test)}"
    seen = f"the champion trained on {share} test rows"
    if more:
        seen += f" and the challenger on {more} more (the same records on both sides of its split)"
    if rows.any():
        note = f"{seen}: both models compared on the other {int(rows.sum())}"
    else:
        note = f"{seen}: no row to compare them on"
    return TrainingOverlap(rows=rows, seen=count, seen_by_challenger=more, note=note)


def _found(test: pd.DataFrame, frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """A mask of the rows of ``test`` that are rows of one of ``frames``."""
    found = np.zeros(len(test), dtype=bool)
    for frame in frames:
        columns = [c for c in test.columns if c in frame.columns]
        if columns and len(frame):
            found |= np.isin(_row_hashes(test[columns]), _row_hashes(frame[columns]))
    return found


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of ``frame``'s values, alike whatever the dtype a value was read
    as: numbers (booleans, numeric categories) as float64, dates and durations as int64
    nanoseconds (UTC), anything else as text; missing values all alike."""
    columns = {}
    for name, values in frame.reset_index(drop=True).items():
        columns[name] = _normalised(values)
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy()


def _normalised(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.CategoricalDtype):
        numeric = pd.api.types.is_numeric_dtype(values.cat.categories)
        values = values.astype("float64" if numeric else object)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.Series(values.to_numpy(dtype="datetime64[ns]").view("int64"))
    if pd.api.types.is_timedelta64_dtype(values):
        return pd.Series(values.to_numpy(dtype="timedelta64[ns]").view("int64"))
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    return values.astype("string").fillna("\x00<NA>")
