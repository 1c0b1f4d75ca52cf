"""Score a CSV file with a registered model version, in this process, held to the version's
training data contract; and record the scoring on the run ``mlflow run . -e score`` made.

``score`` reads what the version was trained on from its lineage tags: the data contract
(``contract.yaml`` of ``lineage.run.validate``), the training split (``data/train.parquet`` of
``lineage.run.split``) and the resolved config (``lineage.artifact``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import column_setting
from mlflow_pipeline.errors import (
    ConfigError,
    DataError,
    DataValidationError,
    PipelineError,
)
from mlflow_pipeline.schemas import (
    AGGREGATE_CHECKS,
    INTEGER_DTYPE,
    Gate,
    contract_roles,
    new_values_expected,
    non_features,
)
from mlflow_pipeline.store.tracking import Tracking, activate
from mlflow_pipeline.tags import Lineage, Runs, Score

STAGE = "score"
DATASET = "input"
SEEN_IN_TRAINING = "seen_in_training"
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"
MODEL_VERSION = "model_version"
CONTRACT_ARTIFACT = "contract.yaml"
# What read_csv's messages call the file; at scoring time it is --input.
INGEST_FILE_OPTION = "data.path: "
INGEST_READ_ADVICE = "; set data.read_options."
ENCODING_OPTION = "data.read_options.encoding"
# validate()'s messages end by pointing at the stage run's failure table; scoring has no run.
RUN_TRAILER = "  The full "


# ---- the model version (serve resolves it here too) ----------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    """A registered version: ``requested`` as the user wrote it, ``uri`` as models:/NAME/VERSION."""

    requested: str
    name: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_model(model_uri: str, tracking_uri: str) -> ResolvedModel:
    """Point this process at ``tracking_uri`` and resolve ``models:/NAME@ALIAS`` or
    ``models:/NAME/VERSION`` to one version.

    Raises ConfigError for a malformed URI or an unknown model, alias or version.
    """
    from mlflow_pipeline.registry.model_registry import resolve_version

    activate(Tracking(uri=tracking_uri, artifact_root=None))
    name, version = resolve_version(MlflowClient(), model_uri)
    return ResolvedModel(
        requested=model_uri, name=name, version=str(version.version), tags=dict(version.tags)
    )


@dataclass
class Training:
    """What a version was trained with: its data contract, training split and config."""

    contract: pa.DataFrameSchema
    train: pd.DataFrame
    cfg: DictConfig


def training_of(model: ResolvedModel) -> Training:
    """Load the contract, training split and recorded config of ``model`` from its lineage.

    Raises PipelineError when the version was not registered by this pipeline (no lineage) or
    its lineage points at runs or artifacts that are gone.
    """
    import mlflow

    from mlflow_pipeline.config import PipelineConfig
    from mlflow_pipeline.schemas import contract_from_yaml
    from mlflow_pipeline.store import artifacts

    needed = (Lineage.RUN_PREFIX + "validate", Lineage.RUN_PREFIX + "split", Lineage.ARTIFACT)
    missing = [tag for tag in needed if not model.tags.get(tag)]
    if missing:
        raise PipelineError(
            f"{model.requested} (v{model.version}) has no lineage (tag {', '.join(missing)}); "
            "it was not registered by this pipeline's register stage, so its training contract "
            "is unknown",
            stage=STAGE,
        )
    try:
        text = artifacts.load_text(model.tags[needed[0]], CONTRACT_ARTIFACT)
        contract = contract_from_yaml(text)
        train = artifacts.load_frame(model.tags[needed[1]], "train")
        lineage = json.loads(mlflow.artifacts.load_text(model.tags[Lineage.ARTIFACT]))
    except PipelineError as exc:
        raise PipelineError(
            f"{model.uri}: cannot load its training contract: {exc}", stage=STAGE
        ) from exc
    try:
        recorded = OmegaConf.create(lineage["config"])
        cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig), recorded)
    except Exception as exc:  # OmegaConf raises several kinds for a config that changed shape
        raise ConfigError(
            f"{model.uri}: its recorded config does not compose with this version of "
            f"mlflow_pipeline: {exc}",
            stage=STAGE,
        ) from exc
    return Training(contract=contract, train=train, cfg=cfg)


# ---- the scoring gate ----------------------------------------------------------------------


def categorical_features(
    contract: pa.DataFrameSchema, train: pd.DataFrame, target: str, ignore: list[str]
) -> list[str]:
    """The contract's string (categorical) columns that the model uses as features."""
    return [
        name
        for name in contract.columns
        if name != target
        and name not in ignore
        and name in train.columns
        and not pd.api.types.is_numeric_dtype(train[name])
    ]


def seen_categories(train: pd.DataFrame, columns: list[str]) -> dict[str, frozenset[str]]:
    """Per column, every value present in the training data (missing values excluded)."""
    return {name: frozenset(str(v) for v in train[name].dropna().unique()) for name in columns}


def seen_in_training_check(allowed: frozenset[str]) -> pa.Check:
    """A row-level check: the value is one of ``allowed`` (missing values pass)."""
    return pa.Check(
        lambda values: _seen(values, allowed),
        ignore_na=False,  # as the gate's rules: missing values pass by how it is written
        name=SEEN_IN_TRAINING,
        error=SEEN_IN_TRAINING,
    )


def _seen(values: pd.Series, allowed: frozenset[str]) -> bool | pd.Series:
    ok = values.isin(allowed) | values.isna()
    return True if ok.all() else ok


def scoring_gate(
    contract: pa.DataFrameSchema,
    cfg: DictConfig,
    seen: Mapping[str, frozenset[str]],
) -> Gate:
    """The training gate (contract types, coercion and row-level rules of ``cfg.validation``)
    for data to score: the target column is optional and unchecked (the model never reads
    it), checks about the whole dataset (class count, duplicate and null fractions) are
    dropped, and each column of ``seen`` gets a ``seen_in_training`` check.

    Raises ConfigError when a validation rule names a column the contract does not have.
    """
    from mlflow_pipeline.schemas import gate

    training = gate(contract, cfg)
    schema = _row_checks_only(training.schema)
    target = cfg.data.target
    if target in schema.columns:  # a file of rows to score may carry it, blank or not
        # The model never reads it, and the output keeps it as read: an int64 target left
        # blank (not a number) had failed its coercion.
        schema = schema.update_column(
            target, required=False, nullable=True, dtype=None, coerce=False, checks=[]
        )
    for name in non_features(contract, cfg.features):  # ids...: the model never reads them
        schema = schema.update_column(name, required=False)
    for name, column in list(schema.columns.items()):
        if name != target and column.nullable and str(column.dtype) == INTEGER_DTYPE:
            # int64 holds no missing value, and the model imputes them: a row to score may
            # miss one. Int64 keeps the others whole (2.9 is still refused, not truncated).
            schema = schema.update_column(name, dtype="Int64")
    for name, allowed in seen.items():
        checks = [*schema.columns[name].checks, seen_in_training_check(allowed)]
        schema = schema.update_column(name, checks=checks)
    warnings = _row_checks_only(training.warnings) if training.warnings is not None else None
    if warnings is not None and not warnings.columns:
        warnings = None
    return Gate(schema=schema, warnings=warnings)


def _row_checks_only(schema: pa.DataFrameSchema) -> pa.DataFrameSchema:
    kept = copy.deepcopy(schema)
    kept.checks = [c for c in kept.checks or [] if not _aggregate(c)]
    for column in kept.columns.values():
        column.checks = [c for c in column.checks if not _aggregate(c)]
    return kept


def _aggregate(check: pa.Check) -> bool:
    """A check about a whole column or dataset (a fraction, a count): meaningless for a batch
    of rows to score, which may be a single row."""
    return str(check.error or check.name).startswith(AGGREGATE_CHECKS)


@dataclass
class ValidatedInput:
    """The validated (coerced) input and the message of its warnings, if any."""

    frame: pd.DataFrame
    warning: str | None = None


def validate_input(
    frame: pd.DataFrame,
    scoring: Gate,
    *,
    max_lines: int = 5,
    stage: str = STAGE,
    dataset: str = DATASET,
) -> ValidatedInput:
    """Validate and coerce ``frame`` with ``scoring`` as ``stage`` (``score``; ``serve`` for a
    request), dataset ``dataset``.

    Raises DataValidationError naming column, check, count and example values.
    """
    from mlflow_pipeline.data.validation import check, summarize

    try:
        result = check(frame, scoring, stage=stage, dataset=dataset, max_lines=max_lines)
    except DataValidationError as exc:
        raise DataValidationError(
            without_run_trailer(str(exc)) + column_hint(exc.failure_cases, scoring.schema),
            stage=stage,
            dataset=dataset,
            failure_cases=exc.failure_cases,
            report=exc.report,
        ) from exc
    warning = None
    if not result.warnings.empty:
        warning = without_run_trailer(
            summarize(
                result.warnings,
                stage=stage,
                dataset=dataset,
                max_lines=max_lines,
                what="has warnings",
                artifact="warnings",
            )
        )
    return ValidatedInput(frame=result.frame, warning=warning)


def column_hint(failures: pd.DataFrame, schema: pa.DataFrameSchema) -> str:
    """Extra lines naming missing and unexpected columns plainly, with the expected ones."""
    lines = []
    for check_name, what in (
        ("column_in_dataframe", "missing column(s)"),
        ("column_in_schema", "unexpected column(s)"),
    ):
        names = failures.loc[failures["check"] == check_name, "failure_case"].dropna().unique()
        if len(names):
            lines.append(f"  {what}: {', '.join(repr(str(n)) for n in names)}")
    hint = ""
    unseen = failures.loc[failures["check"] == SEEN_IN_TRAINING, "column"].dropna().unique()
    if len(unseen):  # a category the model never saw: refused, and how to expect new ones
        named = ", ".join(repr(str(n)) for n in unseen)
        hint = (
            f"\n  {named}: values the model never saw in training; if new values are expected "
            f"there, retrain with {column_setting(str(unseen[0]), 'text')} (a feature of its "
            "words) or role ignore (not a feature), and score the version that run registers "
            "(by its number, models:/<name>/<version>, if it is not promoted)"
        )
    if not lines:
        return hint
    required = [n for n, c in schema.columns.items() if c.required]
    optional = [n for n, c in schema.columns.items() if not c.required]
    expected = ", ".join(required) + (f" (optional: {', '.join(optional)})" if optional else "")
    return hint + "\n" + "\n".join(lines) + f"\n  The training contract has the columns: {expected}"


def without_run_trailer(message: str) -> str:
    """A validation message without its last line about a stage run's artifact."""
    return "\n".join(line for line in message.splitlines() if not line.startswith(RUN_TRAILER))


# ---- predictions and the output file -------------------------------------------------------


def predictions(model: Any, features: pd.DataFrame, version: str) -> pd.DataFrame:
    """``prediction``, one ``proba_<class>`` per class for a classifier, and ``model_version``,
    indexed like ``features``."""
    from sklearn.base import is_classifier

    out = pd.DataFrame({PREDICTION: model.predict(features)}, index=features.index)
    if is_classifier(model) and hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        for position, label in enumerate(model.classes_):
            out[f"{PROBA_PREFIX}{label}"] = proba[:, position]
    out[MODEL_VERSION] = version
    return out


def with_predictions(rows: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    """The input rows, as read, followed by the prediction columns.

    Raises DataError when the input already has a column the output adds.
    """
    clash = [c for c in predicted.columns if c in rows.columns]
    if clash:
        raise DataError(
            f"--input: the output adds column(s) {', '.join(map(repr, clash))}, which the input "
            "already has",
            stage=STAGE,
        )
    return pd.concat([rows, predicted], axis=1)


def check_writable(path: Path) -> None:
    """Raises DataError when ``path`` cannot be written (its directory is missing, or it is
    a directory). Checked before scoring, so a bad --output fails fast."""
    if path.is_dir():
        raise DataError(f"--output: {path} is a directory", stage=STAGE)
    if not path.resolve().parent.is_dir():
        raise DataError(f"--output: no directory {path.resolve().parent}", stage=STAGE)


def write_csv_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV to ``path`` all at once: a temporary file in the same directory,
    renamed over ``path`` only when complete, so ``path`` never holds a partial file.

    Raises DataError when it cannot be written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise DataError(f"--output: cannot write {path}: {exc.strerror}", stage=STAGE) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_input(
    path: Path, read_options: Mapping[str, Any], encoding: str | None = None
) -> pd.DataFrame:
    """The file to score, read as training read its data (same ``read_options``), in
    ``encoding`` when given (``--encoding``) instead of training's.

    Raises DataError (missing, empty, unreadable or malformed file) naming ``--input``, and
    ConfigError for an encoding Python does not know.
    """
    from mlflow_pipeline.stages.ingest import likely_encoding, read_csv

    given = encoding is not None
    if given and not encoding.strip():  # pandas would read "" as its default, UTF-8
        raise ConfigError(
            "--encoding: an empty name is no encoding; name one (latin-1, cp1252, utf-16, ...) "
            "or leave the option out to read the file as the model's training read its data",
            stage=STAGE,
        )
    options = {**read_options, **({"encoding": encoding} if given else {})}
    try:
        return read_csv(Path(path), options)
    except ConfigError as exc:
        if not given:
            raise
        message = str(exc.args[0]) if exc.args else str(exc)
        raise ConfigError(message.replace(ENCODING_OPTION, "--encoding", 1), stage=STAGE) from exc
    except DataError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        message = message.replace(INGEST_FILE_OPTION, "--input: ", 1)
        # ingest's advice (set data.read_options...) is for a pipeline run, not for score.
        head, advice, rest = message.partition(INGEST_READ_ADVICE)
        if advice:
            described = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
            message = (
                f"{head}; score reads it as the model's training read its data "
                f"({'with --encoding' if given else 'data.read_options'}: {described}): "
                "save the file in that form"
            )
            if rest.startswith("encoding"):
                encoding, why = likely_encoding(Path(path))
                message += f", or name its encoding (--encoding {encoding}, {why})"
        raise DataError(message, stage=STAGE) from exc


# ---- the check and the predictions that score and serve share ------------------------------


@dataclass
class Scorer:
    """A version ready to score rows: its estimator, the gate its input must pass (the training
    contract, as ``scoring_gate`` makes it) and how training read its CSV files."""

    model: ResolvedModel
    estimator: Any
    gate: Gate
    read_options: dict[str, Any]
    max_lines: int = 5
    columns: tuple[str, ...] = ()  # what the estimator takes (default: feature_names_in_)
    dates: tuple[str, ...] = ()  # of them, the columns of role datetime


def scorer_of(model: ResolvedModel, estimator: Any, training: Training) -> Scorer:
    """The ``Scorer`` of ``model``: ``estimator`` (loaded by the caller through
    store.artifacts.load_trusted_model) held to the contract of ``training``.

    Raises ConfigError when a validation rule names a column the contract does not have.
    """
    from mlflow_pipeline.stages.train import model_columns

    cfg = training.cfg
    columns = tuple(model_columns(estimator, cfg, training.train))
    made = [str(c) for c in columns if c not in training.contract.columns]
    if made:  # by a stage after validate: score and serve take contract rows, run the model only
        raise PipelineError(
            f"{model.requested} (v{model.version}) reads column(s) {', '.join(map(repr, made))} "
            "that its data contract (the columns score and serve take) does not have: a stage "
            "of its pipeline made them after validate, and score and serve run the model only; "
            "derive such columns inside the model instead (features.transformers, "
            "docs/projects.md)",
            stage=STAGE,
        )
    categorical = categorical_features(
        training.contract,
        training.train,
        cfg.data.target,
        [*cfg.data.ignore_columns, *new_values_expected(training.contract)],
    )
    return Scorer(
        model=model,
        estimator=estimator,
        gate=scoring_gate(training.contract, cfg, seen_categories(training.train, categorical)),
        read_options=dict(OmegaConf.to_container(cfg.data.read_options, resolve=True)),
        max_lines=int(cfg.validation.max_message_failures),
        columns=columns,
        dates=tuple(
            name
            for name, role in contract_roles(training.contract).items()
            if role.role == "datetime" and name in columns
        ),
    )


@dataclass
class ScoredRows:
    """The predictions of rows that passed the contract, and the message of its warnings."""

    predictions: pd.DataFrame
    warning: str | None = None


def score_rows(
    rows: pd.DataFrame, scorer: Scorer, *, stage: str = STAGE, dataset: str = DATASET
) -> ScoredRows:
    """Hold ``rows`` to the version's training contract, then predict them: the one check and
    prediction that ``score`` (a file) and ``serve`` (a request) both apply. The predictions
    are ``predictions()``'s columns, indexed like ``rows``.

    Raises DataValidationError (as ``stage``, dataset ``dataset``) naming column, check, count
    and example values when any row breaks the contract: nothing is predicted then.
    """
    validated = validate_input(
        rows, scorer.gate, max_lines=scorer.max_lines, stage=stage, dataset=dataset
    )
    features = validated.frame[list(scorer.columns or scorer.estimator.feature_names_in_)]
    found = (validated.warning, unreadable_dates(features, scorer.dates), missing(features))
    warnings = [w for w in found if w]
    return ScoredRows(
        predictions=predictions(scorer.estimator, features, scorer.model.version),
        warning="\n".join(warnings) or None,
    )


def missing(features: pd.DataFrame) -> str | None:
    """Rows with no feature present, and (in more than one row) features present in none:
    the model scores them from the values its imputers fill in, which says nothing about
    them. None when there are neither."""
    lines = []
    absent = features.isna()
    empty = [str(c) for c in features.columns[absent.all()]] if len(features) > 1 else []
    if empty:
        lines.append(
            f"column(s) {', '.join(map(repr, empty))}: missing in all {len(features)} rows; "
            "scored with the values training fills in for a missing one"
        )
    blank = np.flatnonzero(absent.all(axis=1).to_numpy()) if len(features.columns) else []
    if len(blank):
        shown = ", ".join(str(i) for i in blank[:5]) + (", ..." if len(blank) > 5 else "")
        lines.append(
            f"{len(blank)} of {len(features)} row(s) have every feature missing (row(s) {shown}, "
            "counting from 0): their predictions come from filled-in values only"
        )
    return "\n".join(lines) or None


def unreadable_dates(frame: pd.DataFrame, dates: tuple[str, ...]) -> str | None:
    """What of ``frame``'s date columns ``dates`` does not read as a date (the model takes it
    as a missing date, as in training), or None: ``column 'Year': 5 of 5 value(s) are not
    dates (e.g. 'not a date'); scored as missing dates``."""
    from mlflow_pipeline.stages.features import parse_dates

    lines = []
    for name in dates:
        values = frame[name]
        unread = values.notna() & parse_dates(values).isna().to_numpy()
        if unread.any():
            examples = ", ".join(repr(str(v)) for v in values[unread].unique()[:3])
            lines.append(
                f"column {name!r}: {int(unread.sum())} of {int(values.notna().sum())} value(s) "
                f"are not dates (e.g. {examples}); scored as missing dates"
            )
    return "\n".join(lines) or None


# ---- score ---------------------------------------------------------------------------------


@dataclass
class ScoreResult:
    """What ``score`` did: which version scored how many rows into which file."""

    model: ResolvedModel
    rows: int
    output: Path
    warning: str | None = None


def score(
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    *,
    tracking_uri: str,
    allow_unsafe: bool = False,
    encoding: str | None = None,
) -> ScoreResult:
    """Score the CSV file ``input_path`` with the registered version ``model_uri`` into
    ``output_path``: the input rows, ``prediction``, ``proba_<class>`` (classifiers) and
    ``model_version``.

    The input is first held to the version's training contract (target optional, no
    unexpected columns, types coerced as in training) and every categorical feature value must
    have been seen in its training data. Nothing is written unless everything succeeds.

    The model is loaded only from a format we trust (store.artifacts.load_trusted_model), unless
    ``allow_unsafe``.
    ``encoding``: the input file's, when it is not the one training read its data in.

    Raises ConfigError (bad URI, unknown model, alias or version), UntrustedModelError (a
    model that could run code when loaded), DataError (unreadable input, unwritable output),
    DataValidationError (input breaks the contract) or PipelineError (the version has no
    lineage).
    """
    from mlflow_pipeline.store.artifacts import load_trusted_model

    output_path = Path(output_path)
    check_writable(output_path)
    model = resolve_model(model_uri, tracking_uri)
    training = training_of(model)
    scorer = scorer_of(model, load_trusted_model(model.uri, allow_unsafe=allow_unsafe), training)
    rows = read_input(Path(input_path), scorer.read_options, encoding)
    scored = score_rows(rows, scorer)
    output = with_predictions(rows, scored.predictions)
    write_csv_atomically(output, output_path)
    return ScoreResult(model=model, rows=len(output), output=output_path, warning=scored.warning)


def log_score_run(run_id: str, result: ScoreResult, input_path: str | Path) -> None:
    """Record a scoring on ``run_id`` (the run ``mlflow run . -e score`` made, which holds the
    entry point's parameters already): the version used, both files, and the rows scored."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    model = result.model
    MlflowClient().log_batch(
        run_id,
        metrics=[Metric("rows_scored", result.rows, int(time.time() * 1000), 0)],
        params=[Param("model_name", model.name), Param("model_version", model.version)],
        tags=[
            RunTag(Runs.KIND, "score"),
            RunTag(Score.MODEL, model.uri),
            RunTag(Score.INPUT, str(Path(input_path).resolve())),
            RunTag(Score.OUTPUT, str(result.output.resolve())),
        ],
    )


def describe_score(result: ScoreResult) -> str:
    """One line: rows scored, the version used and where the predictions went."""
    model = result.model
    return (
        f"scored {result.rows} row(s) with {model.name} v{model.version} "
        f"({model.requested}) -> {result.output}"
    )
