"""train: fit the feature transformation and the estimator as one sklearn Pipeline.

Serving then applies exactly the transformation that training fitted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline import schemas
from mlflow_pipeline.config import Task, column_setting
from mlflow_pipeline.errors import ConfigError, StageError
from mlflow_pipeline.schemas import TrainedModel

if TYPE_CHECKING:
    import pandera.pandas as pa
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

# scikit-learn is imported where it is used: a rerun that is all cache hits never needs it
# (it is about a second of the start-up of every command).
STAGE = "train"
log = logging.getLogger(__name__)
# Keys of a model option that describe it rather than configure the estimator.
MODEL_META_KEYS = ("name", "estimator")


def feature_columns(
    cfg: DictConfig,
    frame: pd.DataFrame,
    contract: pa.DataFrameSchema | None = None,
    *,
    infer: bool = False,
) -> list[str]:
    """Every column the model sees: all but the target, ``data.ignore_columns`` and the
    columns whose role is not a feature as ``contract`` records them: ids, ignored columns,
    and datetime or text columns when ``cfg.features`` leaves them out
    (``schemas.roles_left_out``). Without a contract: the roles set in ``data.columns``, and
    inferred from ``frame`` only with ``infer`` (a small test set would infer differently from
    its training set)."""
    return _features_of(cfg, frame, column_roles_of(cfg, frame, contract, infer=infer))


def _features_of(
    cfg: DictConfig, frame: pd.DataFrame, roles: dict[str, schemas.ColumnRole]
) -> list[str]:
    left_out = schemas.roles_left_out(cfg.features)
    dropped = {cfg.data.target, *cfg.data.ignore_columns}
    dropped |= {name for name, role in roles.items() if role.role in left_out}
    return [c for c in frame.columns if c not in dropped]


def column_roles_of(
    cfg: DictConfig,
    frame: pd.DataFrame,
    contract: pa.DataFrameSchema | None,
    *,
    infer: bool = True,
) -> dict[str, schemas.ColumnRole]:
    """The roles ``contract`` records; without a contract (or roles in it), those set in
    config and, with ``infer``, inferred from ``frame``."""
    recorded = schemas.contract_roles(contract) if contract is not None else {}
    if recorded:
        return recorded
    columns = OmegaConf.to_container(cfg.data.columns, resolve=True)
    ignore = list(cfg.data.ignore_columns)
    roles = schemas.column_roles(frame, cfg.data.target, columns, ignore)
    return roles if infer else {n: r for n, r in roles.items() if not r.inferred}


# How to make each role a feature, for the notice of a column left out.
KEEP_HINT = {
    "id": "set {column_setting} to use it",
    "ignore": "set {column_setting} to use it",
    "datetime": "set features.datetime.parts=[{parts}] to use it",
    "text": "set features.text.mode=tfidf to use it",
}


def role_notices(
    roles: dict[str, schemas.ColumnRole],
    features: DictConfig | None = None,
    inferred_on: str = "",
) -> list[str]:
    """One line per column left out of the features, with how to keep it: ids and ignored
    columns when their role was inferred; datetime and text columns that ``features`` leaves
    out (``features.datetime.parts: []``, ``features.text.mode: drop``) whatever set their
    role. ``inferred_on``: the data an inferred role's counts are of (``the validated data``:
    all rows, not only the training rows)."""
    from mlflow_pipeline.stages.features import DEFAULT_DATETIME_PARTS

    what = {
        "id": "looks like an id",
        "text": "holds free text",
        "datetime": "holds dates",
    }
    left_out = schemas.roles_left_out(features)
    lines = []
    for name, role in roles.items():
        if role.role not in left_out or (role.role in schemas.NOT_FEATURES and not role.inferred):
            continue
        why = "" if role.role in schemas.NOT_FEATURES else f" with features '{features.name}'"
        hint = KEEP_HINT.get(role.role, KEEP_HINT["id"])
        reason = f"{inferred_on}: {role.reason}" if inferred_on and role.inferred else role.reason
        lines.append(
            f"column '{name}' {what.get(role.role, role.role)} ({reason}): not a feature"
            f"{why}; "
            + hint.format(
                column_setting=column_setting(str(name), "categorical"),
                parts=",".join(DEFAULT_DATETIME_PARTS),
            )
        )
    return lines


def build_estimator(model: DictConfig, task: Task) -> BaseEstimator:
    """Instantiate ``model.estimator[task]`` with the option's other keys that it accepts.

    A model option may carry keys for its other task's estimator (``C`` for logistic
    regression, ``alpha`` for ridge); each estimator takes only the keys it knows.
    """
    target = model.estimator.get(Task(task).value)
    if not target:
        raise ConfigError(f"model '{model.name}' has no estimator for task '{Task(task).value}'")
    try:
        accepted = set(inspect.signature(get_class(target)).parameters)
    except Exception as exc:  # hydra wraps import failures in several types
        raise ConfigError(f"model.estimator.{Task(task).value}: cannot import {target}") from exc
    params: dict[str, Any] = {
        k: v
        for k, v in OmegaConf.to_container(model, resolve=True).items()
        if k not in MODEL_META_KEYS and k in accepted
    }
    return instantiate({"_target_": target, **params})


def build_features(
    features: DictConfig,
    numeric: list[str],
    categorical: list[str],
    datetime: Sequence[str] = (),
    text: Sequence[str] = (),
) -> ColumnTransformer:
    """The ColumnTransformer from ``conf/features``: numeric and string columns apart; datetime
    columns as their ``features.datetime.parts`` (then imputed and scaled as numbers); each
    text column as a TF-IDF of at most ``features.text.max_features`` words.

    Raises ConfigError for string, datetime or text columns the option cannot transform.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    def numeric_steps() -> list[Any]:  # fresh instances per branch
        return [instantiate(n) for n in (features.numeric_imputer, features.numeric_scaler) if n]

    categorical_steps = [
        instantiate(n) for n in (features.categorical_imputer, features.categorical_encoder) if n
    ]
    transformers: list[tuple[str, Any, Any]] = []
    if numeric:
        steps = numeric_steps()
        transformers.append(("numeric", make_pipeline(*steps) if steps else "passthrough", numeric))
    if categorical:
        if not categorical_steps:
            raise ConfigError(
                f"features '{features.name}' has no categorical encoder, but the data has "
                f"string columns {categorical[:5]}"
            )
        transformers.append(("categorical", make_pipeline(*categorical_steps), categorical))
    if datetime:
        transformers.append(("datetime", _datetime_branch(features, numeric_steps()), [*datetime]))
    for name in text:  # one vocabulary per column; a scalar selects it as the 1-D input needed
        transformers.append((f"text_{name}", _text_branch(features), name))
    # Dense output: TF-IDF is sparse, and some estimators (HistGradientBoosting) take dense only.
    return ColumnTransformer(
        transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False
    )


def _datetime_branch(features: DictConfig, steps: list[Any]) -> Pipeline:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    from mlflow_pipeline.stages.features import DATETIME_PARTS, DatetimeFeatures

    dates = features.get("datetime")
    parts = [str(p) for p in (dates.get("parts") if dates else None) or []]
    unknown = [p for p in parts if p not in DATETIME_PARTS]
    if not parts or unknown:
        raise ConfigError(
            f"features.datetime.parts of '{features.name}': {unknown or parts} is not a list "
            f"of {', '.join(DATETIME_PARTS)}"
        )
    # A missing date gives NaN parts: they need an imputer even when the option has none.
    if not any(isinstance(s, SimpleImputer) for s in steps):
        steps = [SimpleImputer(strategy="median"), *steps]
    return make_pipeline(DatetimeFeatures(parts=parts), *steps)


def _text_branch(features: DictConfig) -> Pipeline:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    from mlflow_pipeline.stages.features import FilledText

    text = features.get("text")
    mode = text.get("mode") if text else "drop"
    limit = text.get("max_features") if text else None
    if mode != "tfidf" or not isinstance(limit, int) or limit < 1:
        raise ConfigError(
            f"features.text of '{features.name}': mode {mode!r}, max_features {limit!r}; "
            "expected mode tfidf with max_features a positive integer (or mode drop)"
        )
    return make_pipeline(FilledText(), TfidfVectorizer(max_features=limit))


def build_pipeline(
    cfg: DictConfig,
    features: pd.DataFrame,
    roles: Mapping[str, schemas.ColumnRole] | None = None,
) -> Pipeline:
    """Unfitted Pipeline(features -> estimator) for the columns of ``features``: by ``roles``
    (datetime, text), else by dtype (datetime64: dates, numbers, anything else: categorical).
    """
    from sklearn.pipeline import Pipeline

    roles = roles or {}
    steps = [(f"transform_{i}", instantiate(t)) for i, t in enumerate(cfg.features.transformers)]
    if steps:  # the columns the column transformer sees are those the transformers return
        from sklearn.pipeline import Pipeline as Steps

        features = Steps(steps).fit_transform(features.head(1000))
        if not isinstance(features, pd.DataFrame):
            raise ConfigError(
                f"features.transformers of '{cfg.features.name}' must return a DataFrame "
                f"(got {type(features).__name__}): the columns are selected by name after them"
            )

    def role(name: str) -> str | None:
        found = roles.get(name)
        return found.role if found is not None else None

    datetime = [
        c
        for c in features.columns
        if role(c) == "datetime" or pd.api.types.is_datetime64_any_dtype(features[c])
    ]
    text = [c for c in features.columns if role(c) == "text" and c not in datetime]
    rest = [c for c in features.columns if c not in datetime and c not in text]
    numeric = [c for c in rest if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in rest if c not in numeric]
    return Pipeline(
        [
            *steps,
            ("features", build_features(cfg.features, numeric, categorical, datetime, text)),
            ("model", build_estimator(cfg.model, cfg.data.task)),
        ]
    )


def train(cfg: DictConfig, train: pd.DataFrame, contract: str | None = None) -> dict[str, Any]:
    """Returns ``{"model": TrainedModel}``; ``contract`` (pandera YAML) says which columns are
    features (see ``feature_columns``). Raises StageError when fitting fails, ConfigError when
    the features option cannot transform a column."""
    schema = schemas.contract_from_yaml(contract) if contract else None
    roles = column_roles_of(cfg, train, schema)
    # A contract's roles were inferred by validate, on every row (the split came after).
    on = "in the validated data" if schema is not None else ""
    for line in role_notices(roles, cfg.features, on):
        log.info("[%s] %s", STAGE, line)
    features = train[_features_of(cfg, train, roles)]
    pipeline = build_pipeline(cfg, features, roles)
    try:
        pipeline.fit(features, train[cfg.data.target])
    except ValueError as exc:
        raise StageError(f"fitting {cfg.model.name} failed: {exc}", stage=STAGE) from exc
    _record_columns(pipeline, features)
    return {"model": TrainedModel(estimator=pipeline, input_example=features.head(5))}


def _record_columns(pipeline: Any, features: pd.DataFrame) -> None:
    """The columns the model takes, as scikit-learn's ``feature_names_in_``, which score, serve,
    reproduce and register read. A Pipeline reads it from its first step, and a project's own
    first step (the init template's transformer) need not set it."""
    first = pipeline.steps[0][1] if getattr(pipeline, "steps", None) else None
    if getattr(pipeline, "feature_names_in_", None) is None and hasattr(first, "__dict__"):
        first.feature_names_in_ = np.asarray(features.columns, dtype=object)


def model_columns(estimator: Any, cfg: DictConfig, frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that ``estimator`` takes: its ``feature_names_in_``, else (a
    model trained before ``train`` recorded them) ``feature_columns`` of ``frame``."""
    names = getattr(estimator, "feature_names_in_", None)
    return list(names) if names is not None else feature_columns(cfg, frame)
