"""How sure the promotion rule is that the challenger beats the champion: a paired bootstrap
of the difference of the promotion metric on the shared test set.

Both models' predictions on the same rows are resampled together (rows drawn with
replacement, the same draw for both models), the metric difference is computed per resample,
and the percentile interval of those differences at ``confidence`` is the uncertainty of the
comparison. A resample is a vector of row counts; every metric below is the weighted form of
what ``stages.evaluate.metrics_of`` computes with scikit-learn (counts as sample weights give
exactly the metric of the resampled rows), vectorised over many resamples at once.

When the current test set's labels differ from the classes a model knows (a class gone from
this year's data, a class the champion never saw), ``common_ground`` says how both models are
compared, in plain words: on every test row, over the classes present, a class a model never
saw getting probability 0 from it (it cannot predict it, and is judged so); ``score_of``
scores each of them there with one definition of the metric.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlflow_pipeline.config import check_promotion_settings
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.parallel import native_threads, ordered_map

# Resamples are drawn in chunks of about this many (resample x row) cells: bounded memory
# (~16 MB per float64 array) whatever the test set's size.
CHUNK_CELLS = 2_000_000
# An interval from fewer defined resamples than this share is no interval (NaN): the metric
# is undefined in most resamples (a test set with a handful of positives, say).
MIN_DEFINED_SHARE = 0.5
METRICS = ("accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2")


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on the test rows: labels (or values); for a classifier, its
    ``classes`` (``model.classes_``) and class probabilities if it has them (columns in
    ``classes`` order)."""

    y_pred: Any
    proba: Any = None
    classes: Any = None

    def on(self, rows: np.ndarray) -> Predictions:
        """These predictions on the test rows of the mask ``rows`` only."""
        proba = None if self.proba is None else np.asarray(self.proba)[rows]
        return Predictions(np.asarray(self.y_pred)[rows], proba, self.classes)


@dataclass(frozen=True)
class Comparison:
    """The challenger's gain over the champion and its confidence interval.

    ``gain`` is in the metric's better direction (positive: the challenger is better; for a
    lower-is-better metric it is champion - challenger), computed on all test rows;
    ``low``/``high`` bound it at ``confidence`` from ``defined`` of ``resamples`` paired
    bootstrap resamples of ``rows`` rows (NaN when the metric was undefined in too many)."""

    metric: str
    greater_is_better: bool
    gain: float
    low: float
    high: float
    confidence: float
    resamples: int
    defined: int
    rows: int
    seed: int

    @property
    def estimated(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def describe(self) -> str:
        """``95% CI of the gain [0.0012, 0.0301] (1000 paired bootstrap resamples of 114
        test rows)``."""
        if not self.estimated:
            return (
                f"no {self.confidence:.0%} interval: {self.metric} was undefined in "
                f"{self.resamples - self.defined} of {self.resamples} bootstrap resamples of "
                f"{self.rows} test rows"
            )
        return (
            f"{self.confidence:.0%} CI of the gain [{self.low:.6g}, {self.high:.6g}] "
            f"({self.resamples} paired bootstrap resamples of {self.rows} test rows)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


@dataclass(frozen=True)
class CommonGround:
    """How challenger and champion are compared when the test set's labels differ from the
    classes either model knows: on ``rows`` (a mask: every test row), over ``labels`` (the
    classes present), each model's predictions given a probability of 0 for each class present
    that it never saw (``of``); what differs (``missing``: classes the champion knows that the
    test set lacks; ``unseen``: test labels the champion never saw; ``unseen_by_challenger``)
    and ``note``: what was done, in plain words."""

    rows: np.ndarray
    labels: list[Any]
    missing: list[Any]
    unseen: list[Any]
    unseen_by_challenger: list[Any]
    note: str
    where: str = "the test set"

    @property
    def compared(self) -> int:
        return int(self.rows.sum())

    def of(self, predictions: Predictions) -> Predictions:
        """``predictions`` on the compared rows, with a column of probability 0 for each class
        present that the model never saw (it cannot predict it)."""
        on_rows = predictions.on(self.rows)
        if on_rows.proba is None or on_rows.classes is None:
            return on_rows
        known = set(on_rows.classes)
        never = [c for c in self.labels if c not in known]
        if not never:
            return on_rows
        proba = np.asarray(on_rows.proba, dtype=float)
        proba = np.hstack([proba, np.zeros((len(proba), len(never)))])
        classes = np.asarray([*list(on_rows.classes), *never], dtype=object)
        return Predictions(on_rows.y_pred, proba, classes)

    def as_dict(self) -> dict[str, Any]:
        """For promotion.json: the note, the classes that differ, and the rows compared."""
        return {
            "note": self.note,
            "missing": [_plain(c) for c in self.missing],
            "unseen": [_plain(c) for c in self.unseen],
            "unseen_by_challenger": [_plain(c) for c in self.unseen_by_challenger],
            "labels": [_plain(c) for c in self.labels],
            "rows_compared": self.compared,
            "rows": len(self.rows),
            "where": self.where,
        }


def common_ground(
    y_true: Any,
    champion_classes: Any,
    challenger_classes: Any = None,
    *,
    where: str = "the test set",
) -> CommonGround | None:
    """How to compare two classifiers on the test labels ``y_true`` when those labels are not
    exactly the classes the champion (or the challenger) knows; None when they are (or a
    model has no classes: a regressor).

    Every row is compared, over the classes present; a model is judged wrong where the label
    is a class it never saw (``CommonGround.of``). Both models are then scored with
    ``score_of``. ``where``: what ``y_true`` is, in the note (``the test rows the champion did
    not train on``).
    """
    if champion_classes is None:
        return None
    y = np.asarray(y_true)
    present = _ordered(set(y.tolist()))
    champion = list(champion_classes)
    challenger = list(challenger_classes) if challenger_classes is not None else champion
    if set(present) == set(champion) == set(challenger):
        return None
    unseen = [c for c in present if c not in set(champion)]
    unseen_by_challenger = [c for c in present if c not in set(challenger)]
    missing = [c for c in champion if c not in set(present)]
    rows = np.ones(len(y), dtype=bool)
    counts = {c: int((y == c).sum()) for c in {*unseen, *unseen_by_challenger}}
    return CommonGround(
        rows=rows,
        labels=present,
        missing=missing,
        unseen=unseen,
        unseen_by_challenger=unseen_by_challenger,
        note=_note(missing, unseen, unseen_by_challenger, present, counts, len(y), where),
        where=where,
    )


def _note(
    missing: list[Any],
    unseen: list[Any],
    unseen_by_challenger: list[Any],
    labels: list[Any],
    counts: dict[Any, int],
    total: int,
    where: str = "the test set",
) -> str:
    """``class 'snow' is not in the test set; both models compared on the 4 classes present``;
    ``the test set has class 'hail' the champion never saw: both models judged on all 420 rows,
    including the champion on the 28 of class 'hail', which it cannot predict``."""
    parts = []
    has = "has" if where == "the test set" else "have"  # the test rows ... have
    if missing:
        parts.append(f"{_classes(missing)} {'is' if len(missing) == 1 else 'are'} not in {where}")
    wrong = []
    for model, never in (("champion", unseen), ("challenger", unseen_by_challenger)):
        if never:
            parts.append(f"{where} {has} {_classes(never)} the {model} never saw")
            rows = sum(counts[c] for c in never)
            wrong.append(f"the {model} on the {rows} of {_classes(never)}, which it cannot predict")
    if wrong:
        judged = f": both models judged on all {total} rows, including "
        return "; ".join(parts) + judged + " and ".join(wrong)
    head = "; ".join(parts) + "; " if parts else ""
    return f"{head}both models compared on the {len(labels)} classes present"


def _classes(classes: list[Any]) -> str:
    named = ", ".join(repr(_plain(c)) for c in classes)
    return f"class {named}" if len(classes) == 1 else f"classes {named}"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (``'snow'``, ``3``) for messages and JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _ordered(values: set[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # labels of mixed types
        return sorted(values, key=str)


def score_of(metric: str, y_true: Any, predictions: Predictions, labels: Any = None) -> float:
    """``metric`` (one of METRICS) of ``predictions`` on all rows ``y_true``, as the paired
    bootstrap computes it; with ``labels``, f1 is the support-weighted F1 over those classes
    whatever the model's classes (one definition for two models that know different classes).
    roc_auc of a multiclass model is one-vs-rest weighted by support: classes absent from
    ``y_true`` weigh nothing. NaN when the metric is undefined on these rows.

    Raises ConfigError for an unknown metric, or roc_auc / log_loss without probabilities."""
    if metric not in METRICS:
        raise ConfigError(f"no paired bootstrap for metric '{metric}' (known: {METRICS})")
    y = np.asarray(y_true)
    if not len(y):
        return float("nan")
    return float(_RowStats(metric, y, predictions, labels).scores(_every_row_once(len(y)))[0])


def check_settings(confidence: float, resamples: int) -> None:
    """Raises ConfigError for a confidence level outside (0, 1) or fewer than 10 resamples."""
    check_promotion_settings(confidence, resamples)


def paired_bootstrap(
    metric: str,
    y_true: Any,
    challenger: Predictions,
    champion: Predictions,
    *,
    greater_is_better: bool,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    labels: Any = None,
) -> Comparison:
    """The paired bootstrap of ``metric`` (one of METRICS): challenger against champion on
    the same rows ``y_true``. Deterministic for a given ``seed``. ``labels``: the classes
    compared (``CommonGround.labels``), as in ``score_of``.

    Raises ConfigError for an unknown metric or bad settings."""
    if metric not in METRICS:
        raise ConfigError(f"no paired bootstrap for metric '{metric}' (known: {METRICS})")
    check_settings(confidence, resamples)
    y = np.asarray(y_true)
    rows = len(y)
    stats = [_RowStats(metric, y, p, labels) for p in (challenger, champion)]
    sign = 1.0 if greater_is_better else -1.0
    full = _every_row_once(rows)
    gain = float(sign * (stats[0].scores(full)[0] - stats[1].scores(full)[0]))

    rng = np.random.default_rng(seed)
    chunk = max(1, min(int(resamples), CHUNK_CELLS // max(rows, 1)))
    # Drawn here in order (the same resamples whatever the thread count); scored on the
    # stage's threads: the rankings' gathers and cumulative sums run without the GIL. The
    # rankings the threads share were built by the full-sample score above.
    weights = (
        _counts(rng, min(chunk, int(resamples) - start), rows)
        for start in range(0, int(resamples), chunk)
    )

    def gains(drawn: np.ndarray) -> np.ndarray:
        # Scored as rows x resamples, made once for both models: for the AUC a copy with each
        # row's counts adjacent in memory (its gathers of rows then read one cache line per
        # row, ten times faster than gathering columns); for the other metrics, floats for
        # BLAS, which reads the transposed view as it is.
        w = np.ascontiguousarray(drawn.T) if metric == "roc_auc" else drawn.astype(float).T
        return sign * (stats[0].scores(w) - stats[1].scores(w))

    diffs = np.concatenate(ordered_map(gains, weights, native_threads(), name="bootstrap"))
    defined = diffs[np.isfinite(diffs)]
    low = high = float("nan")
    if rows and len(defined) >= MIN_DEFINED_SHARE * len(diffs):
        tail = (1.0 - float(confidence)) / 2.0
        low, high = (float(q) for q in np.quantile(defined, [tail, 1.0 - tail]))
    return Comparison(
        metric=metric,
        greater_is_better=greater_is_better,
        gain=gain,
        low=low,
        high=high,
        confidence=float(confidence),
        resamples=int(resamples),
        defined=len(defined),
        rows=rows,
        seed=seed,
    )


def _counts(rng: np.random.Generator, size: int, rows: int) -> np.ndarray:
    """``size`` bootstrap resamples of ``rows`` rows, as counts per row: resamples x rows.

    Integers, 32-bit below 2**30 rows: their sums are exact and move half the memory of
    floats. Drawn one resample at a time (a bincount of ``rows``, not of size x rows)."""
    dtype = np.int32 if rows < 2**30 else np.int64
    counts = np.empty((size, rows), dtype=dtype)
    for i in range(size):
        counts[i] = np.bincount(rng.integers(0, rows, size=rows, dtype=dtype), minlength=rows)
    return counts


def _every_row_once(rows: int) -> np.ndarray:
    """The sample itself as counts, in the layout ``_RowStats.scores`` takes: one column."""
    return np.ones((rows, 1), dtype=np.int32 if rows < 2**30 else np.int64)


class _RowStats:
    """What one model's ``metric`` needs per row, precomputed once; ``scores(weights)`` is
    the metric under each column of ``weights`` (rows x resamples)."""

    def __init__(
        self, metric: str, y: np.ndarray, predictions: Predictions, labels: Any = None
    ) -> None:
        self.metric = metric
        self.labels = None if labels is None else list(labels)
        self.y = y
        self.pred = np.asarray(predictions.y_pred)
        self.proba = None if predictions.proba is None else np.asarray(predictions.proba, float)
        self.classes = None if predictions.classes is None else list(predictions.classes)
        if metric in ("roc_auc", "log_loss") and self.proba is None:
            raise ConfigError(f"{metric} needs class probabilities; the model has none")
        self._rankings: dict[int, _Ranking] = {}

    def scores(self, w: np.ndarray) -> np.ndarray:
        total = None if self.metric == "roc_auc" else w.sum(axis=0)  # the AUC sums its own
        with np.errstate(divide="ignore", invalid="ignore"):
            return getattr(self, f"_{self.metric}")(w, total)

    # ---- regression ------------------------------------------------------------------------

    def _errors(self) -> np.ndarray:
        return self.y.astype(float) - self.pred.astype(float)

    def _rmse(self, w: np.ndarray, total: np.ndarray) -> np.ndarray:
        return np.sqrt(self._errors() ** 2 @ w / total)

    def _mae(self, w: np.ndarray, total: np.ndarray) -> np.ndarray:
        return np.abs(self._errors()) @ w / total

    def _r2(self, w: np.ndarray, total: np.ndarray) -> np.ndarray:
        y = self.y.astype(float)
        centred = y - y.mean()  # centring first keeps the sums of squares accurate
        mean = centred @ w / total
        ss_tot = centred**2 @ w - total * mean**2
        ss_res = self._errors() ** 2 @ w
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)

    # ---- classification --------------------------------------------------------------------

    def _accuracy(self, w: np.ndarray, total: np.ndarray) -> np.ndarray:
        return (self.pred == self.y).astype(float) @ w / total

    def _f1(self, w: np.ndarray, total: np.ndarray) -> np.ndarray:
        classes = self.labels or self.classes or sorted(set(self.y) | set(self.pred))
        if self.labels is None and len(classes) == 2:  # metrics_of: binary, classes[-1]
            return self._f1_of(w, classes[-1])
        supports = [(self.y == c).astype(float) @ w for c in classes]
        weighted = sum(s * self._f1_of(w, c) for s, c in zip(supports, classes, strict=True))
        return weighted / sum(supports)

    def _f1_of(self, w: np.ndarray, label: Any) -> np.ndarray:
        actual, predicted = self.y == label, self.pred == label
        tp = (actual & predicted).astype(float) @ w
        wrong = (actual ^ predicted).astype(float) @ w  # false positives + false negatives
        denominator = 2 * tp + wrong
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)

    def _log_loss(self, w: np.ndarray, total: np.ndarray) -> np.ndarray:
        return self._row_log_losses @ w / total

    @functools.cached_property
    def _row_log_losses(self) -> np.ndarray:
        """Each row's log loss, found once for every resample (a look-up per row)."""
        eps = np.finfo(self.proba.dtype).eps
        columns = {c: i for i, c in enumerate(self.classes)}
        truth = self.proba[np.arange(len(self.y)), [columns[v] for v in self.y]]
        return -np.log(np.clip(truth, eps, 1 - eps))

    def _roc_auc(self, w: np.ndarray, total: np.ndarray | None) -> np.ndarray:
        if len(self.classes) == 2:
            return self._ranking(1).auc(w)
        # metrics_of: one-vs-rest, weighted by each class's support (of this resample).
        supports, weighted = np.zeros(w.shape[1]), np.zeros(w.shape[1])
        for i, label in enumerate(self.classes):
            support = (self.y == label).astype(float) @ w
            auc = self._ranking(i).auc(w)
            weighted += np.where(support > 0, np.nan_to_num(auc) * support, 0.0)
            supports += support
        return weighted / supports

    def _ranking(self, column: int) -> _Ranking:
        """The ranking of class ``column``'s scores, computed once for every resample."""
        if column not in self._rankings:
            positive = self.y == self.classes[column]
            self._rankings[column] = _Ranking.of(positive, self.proba[:, column])
        return self._rankings[column]


@dataclass(frozen=True)
class _Ranking:
    """One sort of the negatives' scores and, per positive row, how many negatives score
    below it (``below``) and below or level with it (``up_to``): what the weighted AUC of
    every resample needs, independent of the weights."""

    negatives: np.ndarray  # negative rows, by ascending score
    positives: np.ndarray
    below: np.ndarray
    up_to: np.ndarray

    @classmethod
    def of(cls, positive: np.ndarray, score: np.ndarray) -> _Ranking:
        negatives = np.flatnonzero(~positive)
        negatives = negatives[np.argsort(score[negatives], kind="stable")]
        positives = np.flatnonzero(positive)
        ranked = score[negatives]
        return cls(
            negatives,
            positives,
            np.searchsorted(ranked, score[positives], side="left"),
            np.searchsorted(ranked, score[positives], side="right"),
        )

    def auc(self, w: np.ndarray) -> np.ndarray:
        """The weighted area under the ROC curve per column of ``w`` (rows x resamples): the
        Mann-Whitney statistic (the weight of negatives scored below each positive, ties
        counting one half). NaN where a resample has no positive or no negative row."""
        # Counts (``_counts``) are summed as integers: exact, and half the memory of floats.
        # In their own dtype: a resample's counts add up to its rows, below 2**30 for int32.
        counts = w.dtype.kind in "iu"
        total = np.int64 if counts else float
        cumulative = np.zeros((len(self.negatives) + 1, w.shape[1]), w.dtype if counts else float)
        np.cumsum(np.take(w, self.negatives, axis=0), axis=0, out=cumulative[1:])
        positive_weights = np.take(w, self.positives, axis=0)
        # Per positive: the negatives below it plus half of those tied with it (twice that).
        twice = np.take(cumulative, self.below, axis=0)
        twice += np.take(cumulative, self.up_to, axis=0)
        area = 0.5 * np.einsum("ij,ij->j", positive_weights, twice, dtype=total)
        pairs = positive_weights.sum(axis=0, dtype=total) * cumulative[-1].astype(total)
        return np.where(pairs > 0, area / np.where(pairs > 0, pairs, 1.0), np.nan)
