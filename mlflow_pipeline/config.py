"""Dataclass schemas for every config group, registered in Hydra's ConfigStore, and
``load_config`` for code and tests (Hydra's compose API over ``conf/``).

A typo in an override fails at composition with the key named; required values are ``???``.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlflow_pipeline.errors import ConfigError

# mlflow-pipeline's default configs, shipped inside the package (pkg://mlflow_pipeline.conf).
PACKAGE_CONF = Path(__file__).resolve().parent / "conf"
# A project is a directory holding an MLproject; its conf/config.yaml (if any) is the primary
# config, extending the package's through Hydra's search path.
PROJECT_MARKER = "MLproject"


def find_project_root(start: Path | None = None) -> Path:
    """The project ``start`` (default: the working directory) is in: the nearest directory at
    or above it holding an MLproject; ``start`` itself when there is none."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / PROJECT_MARKER).is_file():
            return directory
    return here


def conf_dir_of(root: Path) -> Path:
    """The primary config directory of the project at ``root``: its conf/ when that holds a
    config.yaml, else the package's defaults."""
    own = root / "conf"
    return own if (own / "config.yaml").is_file() else PACKAGE_CONF


# The project this process runs in (found from the working directory at start), where its
# embedded store lives (tracking.root: null), and the config directory Hydra composes from.
PROJECT_ROOT = find_project_root()
CONF_DIR = conf_dir_of(PROJECT_ROOT)


def require_extra(module: str, extra: str, what: str) -> None:
    """Raise ConfigError naming the pip extra that brings ``module`` when it is missing."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found:
        raise ConfigError(
            f"{what} needs the '{extra}' extra: pip install 'mlflow-pipeline[{extra}]'"
        )


def use_project_code(root: Path = PROJECT_ROOT) -> None:
    """Make the project's own code importable: ``<root>/src`` first on sys.path (where
    ``mlflow-pipeline init`` puts a project's stages and transformers)."""
    src = str(root / "src")
    if (root / "src").is_dir() and src not in sys.path:
        sys.path.insert(0, src)


# Metrics the evaluate stage computes per task, and whether greater is better.
METRICS: dict[str, dict[str, bool]] = {
    "classification": {"accuracy": True, "f1": True, "roc_auc": True, "log_loss": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
# use: reuse a stage's earlier result with the same cache key; recompute: always run (the
# result can be reused later); off: always run, never reused.
CACHE_POLICIES = ("use", "recompute", "off")
DEFAULT_PROMOTION_METRIC = {"classification": "roc_auc", "regression": "rmse"}


class Task(Enum):
    classification = "classification"
    regression = "regression"


@dataclass
class DataConfig:
    """Where the raw data comes from and what it means."""

    name: str = MISSING
    # "sklearn": a dataset bundled with scikit-learn (``loader`` names the function);
    # "csv": a file at ``path``.
    source: str = "csv"
    loader: str | None = None
    path: str | None = None
    target: str = MISSING
    task: Task = MISSING
    # A pandera YAML schema (``pandera.io.from_yaml``); null: infer one from the data.
    schema: str | None = None
    # Extra keyword arguments for ``pandas.read_csv`` (e.g. ``sep``).
    read_options: dict[str, Any] = field(default_factory=dict)
    # Columns that are neither features nor target (ids, timestamps); kept in the data.
    ignore_columns: list[str] = field(default_factory=list)
    # Per column, what it is to the model: ``{name: {role: ...}}`` with role one of numeric,
    # integer, categorical, datetime, text, id, ignore. Unset columns get an inferred role;
    # id and ignore columns are not features; datetime and text ones are as ``features`` says.
    columns: dict[str, Any] = field(default_factory=dict)


# What a column is to the model (``data.columns.<name>.role``).
ROLES = ("numeric", "integer", "categorical", "datetime", "text", "id", "ignore")


def column_role_setting(name: str, spec: Any) -> Any:
    """The role ``data.columns.<name>`` sets (``{role: x}`` or just ``x``).

    Raises ConfigError for a value that is not a role: checked before a run starts, so
    ``--dry-run`` shows it too.
    """
    role = spec.get("role") if isinstance(spec, (dict, DictConfig)) else spec
    if role not in ROLES:
        raise ConfigError(
            f"data.columns.{name}.role: {role!r} is not a role (one of {', '.join(ROLES)})"
        )
    return role


@dataclass
class DatetimeFeaturesConfig:
    """What each datetime column becomes (``features.datetime``): numbers, then imputed and
    scaled as numeric columns are."""

    # Some of year, quarter, month, day, dayofweek, dayofyear, hour, elapsed (days since the
    # earliest training date); [] (the default: a features option that does not say) leaves
    # datetime columns out.
    parts: list[str] = field(default_factory=list)


@dataclass
class TextFeaturesConfig:
    """What each free-text column becomes (``features.text``)."""

    # tfidf: a TF-IDF of its words (missing text: ""), what the shipped features configs
    # (standard, trees) choose; drop: not a feature (for a features config that names no mode).
    mode: str = "drop"
    # The vocabulary kept per column, most frequent words first: the model's width is bounded.
    max_features: int = 200


@dataclass
class FeaturesConfig:
    """The feature transformation fitted with the estimator, as ``_target_`` nodes."""

    name: str = MISSING
    numeric_imputer: Any = None
    numeric_scaler: Any = None
    categorical_imputer: Any = None
    categorical_encoder: Any = None
    # Datetime and free-text columns (roles datetime, text). Left out unless the option says
    # (as models trained before these keys were): a notice names each column left out.
    datetime: DatetimeFeaturesConfig = field(default_factory=DatetimeFeaturesConfig)
    text: TextFeaturesConfig = field(default_factory=TextFeaturesConfig)
    # Transformers (``_target_`` nodes: any scikit-learn transformer, the project's own too)
    # applied to the feature frame first, in order; they must return a DataFrame.
    transformers: list[Any] = field(default_factory=list)


@dataclass
class ModelBase:
    """Common part of every ``conf/model`` option: the estimator class per task.

    Every other key of a model option is a constructor argument of that class.
    """

    name: str = MISSING
    estimator: dict[str, str] = field(default_factory=dict)


@dataclass
class LinearModelConfig(ModelBase):
    C: float = 1.0
    alpha: float = 1.0
    max_iter: int = 1000


@dataclass
class RandomForestConfig(ModelBase):
    n_estimators: int = 100
    max_depth: int | None = None
    min_samples_leaf: int = 1
    n_jobs: int | None = None
    random_state: int | None = None


@dataclass
class HistGradientBoostingConfig(ModelBase):
    max_iter: int = 100
    learning_rate: float = 0.1
    max_depth: int | None = None
    max_leaf_nodes: int | None = 31
    random_state: int | None = None


@dataclass
class SplitConfig:
    test_size: float = 0.2
    stratify: bool = True
    random_state: int | None = None


@dataclass
class EvaluationConfig:
    # metric name -> {min: float|null, max: float|null}. A metric no task computes, or a key
    # other than min/max, is a config error. (A plain dict, so the command line can add one:
    # +evaluation.thresholds.accuracy.min=0.9.)
    thresholds: dict[str, Any] = field(default_factory=dict)
    # Memory the permutation importance's shuffled copies of the test set may take at once
    # (they are predicted in chunks of this size; wide tables need many chunks).
    importance_memory_mb: float = 256.0


@dataclass
class PromotionConfig:
    # "auto": roc_auc for classification, rmse for regression.
    metric: str = "auto"
    # The challenger must beat the champion by at least this much (and by more than 0).
    min_delta: float = 0.0
    # ... and by more than the noise: the lower bound of this confidence interval of the gain
    # (a paired bootstrap on the shared test set, this many resamples, seeded by seed) > 0.
    confidence: float = 0.95
    resamples: int = 1000
    # How long a register waits for another one promoting the same model (the promotion lock).
    lock_timeout_s: float = 600.0


@dataclass
class RegistryConfig:
    model_name: str = MISSING
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    rollback_alias: str = "rollback"
    # Where every alias move is recorded (registry/audit.py): one MLflow run per move.
    audit_experiment: str = MISSING
    # Load models that could run code when loaded (pickle/cloudpickle, another flavor, skops
    # types outside our trusted list; see store/artifacts.py). Off: anyone who can write to the
    # registry could otherwise run code on every machine that trains or scores.
    allow_unsafe_models: bool = False


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///<root>/mlflow.db
    uri: str | None = None
    # Where the embedded store lives; null means the project root.
    root: str | None = None
    experiment_name: str = MISSING


@dataclass
class RunnerConfig:
    # "in_process": every stage in this process (each its own child run);
    # "projects": every stage through mlflow.projects.run of projects/<stage>.
    mode: str = "in_process"
    env_manager: str = "local"
    # Run id of an earlier pipeline run whose stage outputs feed stages not run now.
    upstream_run_id: str | None = None
    # Threads of each stage's OpenMP/BLAS pools: auto (one for a small input, else the CPUs
    # other processes leave idle; engine/threads.py) or a number.
    threads: Any = "auto"


@dataclass
class CacheConfig:
    # One of CACHE_POLICIES, for every stage.
    policy: str = "use"
    # Per-stage policy, overriding ``policy``: e.g. ``+cache.stages.train=recompute``.
    stages: dict[str, str] = field(default_factory=dict)
    # A rerun that would be all cache hits is recognised before the heavy imports and runs
    # nothing (engine/noop.py); false: every run records a pipeline run, hits included.
    fast_noop: bool = True


SEVERITIES = ("error", "warning")
# Checks the gates run besides the contract's types, by the name `validation.severity` uses.
GATE_CHECKS = (
    "coerce_dtype",
    "not_nullable",
    "in_range",
    "allowed_categories",
    "unique",
    "null_fraction",
    "finite",
    "max_abs_value",
    "duplicate_rows",
    "not_dates",
)
DRIFT_POLICIES = ("warn", "fail", "off")
DRIFT_METHODS = {
    "numeric": ("psi", "ks"),
    "categorical": ("psi", "chi2"),
    "text": ("compare", "skip"),
}


@dataclass
class QuarantineConfig:
    # Drop rows that fail row-level checks at the validate gate (logged as quarantine/raw.csv)
    # instead of failing, as long as they are at most ``max_fraction`` of the rows.
    enabled: bool = False
    max_fraction: float = 0.01


@dataclass
class DriftConfig:
    """Drift of today's data against the champion's training data profile (profile stage)."""

    # warn: flag the run and continue; fail: stop before validate/training; off: do not check.
    policy: str = "warn"
    # psi | ks for numeric features; psi | chi2 for categorical ones.
    numeric_method: str = "psi"
    categorical_method: str = "psi"
    # PSI at or above this is drift (0.1: moderate, 0.2: significant, by convention).
    psi_threshold: float = 0.2
    # KS / chi-square: drift when p < pvalue AND the effect size reaches the minimum (a large
    # sample makes any tiny difference significant).
    ks_pvalue: float = 0.01
    ks_min_statistic: float = 0.1
    chi2_pvalue: float = 0.01
    chi2_min_cramers_v: float = 0.1
    # Histogram bins of a numeric profile (quantile bins of the reference for PSI).
    bins: int = 10
    # Features not compared (ids, timestamps); data.ignore_columns are never compared.
    ignore: list[str] = field(default_factory=list)
    # Dates: drift when this share of today's dates is before the reference's first one, or
    # the share of values that are not dates grew by this much (Fisher p < chi2_pvalue/tests).
    datetime_before_fraction: float = 0.5
    datetime_unparseable_increase: float = 0.05
    # Free text: compare (length by numeric_method; words) | skip.
    text_method: str = "compare"
    text_vocabulary: int = 2000
    text_unseen_increase: float = 0.1


@dataclass
class ValidationConfig:
    # How many failure rows the error message quotes; the artifact has them all.
    max_message_failures: int = 5
    # check name (see GATE_CHECKS) -> error | warning. A warning is reported and logged
    # (warnings/<dataset>.csv) but does not stop the pipeline.
    severity: dict[str, str] = field(default_factory=dict)
    # column -> {min: x, max: y} (either may be null): values outside fail ``in_range``.
    ranges: dict[str, Any] = field(default_factory=dict)
    # column -> [allowed values]: anything else fails ``allowed_categories``.
    categories: dict[str, Any] = field(default_factory=dict)
    # Columns whose values must be unique (ids): duplicates fail ``unique``.
    unique: list[str] = field(default_factory=list)
    # Largest fraction of missing values in any column (``null_fraction``), and per column.
    max_null_fraction: float = 0.99
    null_fractions: dict[str, float] = field(default_factory=dict)
    # Numeric columns must hold no +/-inf (``finite``) and no value beyond +/-max_abs_value.
    finite: bool = True
    max_abs_value: float | None = 1.0e15
    # Largest fraction of rows that repeat an earlier row (``duplicate_rows``); null: no check.
    max_duplicate_fraction: float | None = 0.25
    # Largest fraction of a datetime column's values present that are not dates (``not_dates``):
    # a role the values contradict leaves every date part missing; null: no check.
    max_not_dates_fraction: float | None = 0.5
    # Columns added or missing compared with the champion's training data (profile stage).
    schema_changes: str = "error"
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)


ALERT_KINDS = ("failure", "drift")


@dataclass
class AlertsConfig:
    """Who hears about a failed pipeline run or a drift flag (``engine/alerts.py``)."""

    # A shell command, run with the alert in MLFLOW_PIPELINE_ALERT_* environment variables.
    command: str | None = None
    # An http(s) URL the alert is POSTed to as JSON; null: $MLFLOW_PIPELINE_ALERT_WEBHOOK if
    # set (keeps a secret URL out of the run's logged params and config).
    webhook: str | None = None
    # Which events alert: failure (a pipeline run failed), drift (the drift check fired).
    kinds: list[str] = field(default_factory=lambda: list(ALERT_KINDS))
    # Seconds each hook may take before it is given up.
    timeout_s: float = 10.0


@dataclass
class PipelineConfig:
    data: DataConfig = MISSING
    features: FeaturesConfig = MISSING
    model: Any = MISSING
    split: SplitConfig = field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    # The pipeline to run: its declaration (the group conf/pipeline, see engine.pipeline), or
    # the package.module:NAME of a Pipeline object.
    pipeline: Any = MISSING
    # The stages to run (null: all of the pipeline's); checked against the declaration.
    steps: list[str] | None = None
    seed: int | None = 42


# A date or timestamp in a file name: 2026-12-01, 20261201, 2026_12_01T06-30.
_DATE = re.compile(
    r"(19|20)\d{2}([-_.]?)(0[1-9]|1[0-2])(\2(0[1-9]|[12]\d|3[01]))?"
    r"([tT_ -]?\d{2}[-_:.]?\d{2}([-_:.]?\d{2})?)?"
)


def dataset_name(path: Any) -> str:
    """The name a data file gives its experiment and model: its stem without dates; the
    folder's name when nothing else is left (``sales/2026-12-01.csv`` -> ``sales``)."""
    file = Path(str(path))
    name = _DATE.sub("", file.stem).strip("-_. ")
    if not name:
        name = _DATE.sub("", file.parent.name).strip("-_. ") or "data"
    return name


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore and our resolvers in OmegaConf (idempotent)."""
    # ${stem:${.path}}: a dataset named after its file (customers.csv -> customers).
    if not OmegaConf.has_resolver("stem"):
        OmegaConf.register_new_resolver("stem", lambda path: Path(str(path)).stem)
    # ${dataset_name:${.path}}: a dataset named after its file, without dates in the name
    # (daily/2026-12-01.csv -> daily), so a daily file does not make a new model each day.
    if not OmegaConf.has_resolver("dataset_name"):
        OmegaConf.register_new_resolver("dataset_name", dataset_name)
    # ${project:}: the project's root directory, wherever mlflow-pipeline runs from.
    if not OmegaConf.has_resolver("project"):
        OmegaConf.register_new_resolver("project", lambda: str(PROJECT_ROOT))
    cs = ConfigStore.instance()
    cs.store(name="pipeline_schema", node=PipelineConfig)
    cs.store(group="schema/model", name="linear", node=LinearModelConfig)
    cs.store(group="schema/model", name="random_forest", node=RandomForestConfig)
    cs.store(group="schema/model", name="hist_gradient_boosting", node=HistGradientBoostingConfig)


register_configs()


def load_config(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the project's config (``CONF_DIR``) with Hydra overrides, as the CLI would,
    and check it.

    Raises ConfigError naming the bad key or option.
    """
    overrides = list(overrides or [])
    try:
        if GlobalHydra.instance().is_initialized():  # inside the Hydra app (a sweep callback)
            cfg = compose(config_name=config_name, overrides=overrides)
        else:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        # Hydra's "Error merging override x=y" keeps the reason (bad type/value) in its cause.
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise ConfigError(f"invalid configuration: {exc}{cause}") from exc
    check_config(cfg)
    return cfg


def check_promotion_settings(confidence: float, resamples: int) -> None:
    """Raises ConfigError for a confidence level outside (0, 1) or fewer than 10 resamples:
    checked before a run starts, and again by the comparison itself."""
    if not 0.0 < float(confidence) < 1.0:
        raise ConfigError(
            f"promotion.confidence must be between 0 and 1 (exclusive), got {confidence}"
        )
    if int(resamples) < 10:
        raise ConfigError(f"promotion.resamples must be at least 10, got {resamples}")


def check_config(cfg: DictConfig) -> None:
    """Resolve every interpolation and check values that types alone cannot.

    Raises ConfigError.
    """
    try:
        OmegaConf.resolve(cfg)
        missing = set(OmegaConf.missing_keys(cfg))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    # `path: ???` in conf/data/csv.yaml cannot override the schema's default (None): report it
    # with the other missing values rather than one error later.
    if cfg.data.source == "csv" and not cfg.data.path:
        missing.add("data.path")
    missing = sorted(missing)
    if missing:
        raise ConfigError(f"missing required config value(s): {', '.join(missing)}")
    if cfg.runner.mode not in ("in_process", "projects"):
        raise ConfigError(f"runner.mode={cfg.runner.mode!r} is not one of 'in_process', 'projects'")
    for where, policy in [("cache.policy", cfg.cache.policy)] + [
        (f"cache.stages.{name}", value) for name, value in cfg.cache.stages.items()
    ]:
        if policy not in CACHE_POLICIES:
            raise ConfigError(f"{where}={policy!r} is not one of {', '.join(CACHE_POLICIES)}")
    if cfg.data.source not in ("csv", "sklearn"):
        raise ConfigError(f"data.source={cfg.data.source!r} is not one of 'csv', 'sklearn'")
    if cfg.registry.audit_experiment == cfg.tracking.experiment_name:
        raise ConfigError(
            f"registry.audit_experiment={cfg.registry.audit_experiment!r} is the pipeline's "
            "experiment (tracking.experiment_name): the audit trail needs an experiment of its own"
        )
    if cfg.data.source == "csv" and not cfg.data.path:
        raise ConfigError("data.path is required when data.source=csv")
    if cfg.data.source == "sklearn" and not cfg.data.loader:
        raise ConfigError("data.loader is required when data.source=sklearn")
    if cfg.data.source == "sklearn" and cfg.data.path:
        # `mlflow-pipeline data.path=x.csv ...` without data=csv would train on the bundled
        # default dataset and never read x.csv.
        raise ConfigError(
            f"data.path={cfg.data.path} is set, but data={cfg.data.name} is a dataset bundled "
            f"with scikit-learn and reads no file: add data=csv to read {cfg.data.path}"
        )
    task = Task(cfg.data.task).value
    if task not in cfg.model.estimator:
        raise ConfigError(
            f"model '{cfg.model.name}' has no estimator for task '{task}' (model.estimator)"
        )
    known = {m for metrics in METRICS.values() for m in metrics}
    for metric, bound in cfg.evaluation.thresholds.items():
        if metric not in known:
            raise ConfigError(
                f"evaluation.thresholds.{metric}: unknown metric; known: {', '.join(sorted(known))}"
            )
        _check_bound(metric, bound)
    if cfg.promotion.metric != "auto" and cfg.promotion.metric not in METRICS[task]:
        raise ConfigError(
            f"promotion.metric={cfg.promotion.metric!r} is not a {task} metric; "
            f"choose from auto, {', '.join(METRICS[task])}"
        )
    check_promotion_settings(cfg.promotion.confidence, cfg.promotion.resamples)
    for name, spec in cfg.data.columns.items():
        column_role_setting(str(name), spec)
    _check_validation(cfg.validation)
    if not 0.0 < cfg.split.test_size < 1.0:
        raise ConfigError(f"split.test_size={cfg.split.test_size} must be between 0 and 1")
    _check_alerts(cfg.alerts)


def _check_alerts(alerts: DictConfig) -> None:
    """Values of ``conf/alerts`` that types alone cannot check."""
    unknown = [kind for kind in alerts.kinds if kind not in ALERT_KINDS]
    if unknown:
        raise ConfigError(
            f"alerts.kinds: unknown kind(s) {unknown}; choose from {', '.join(ALERT_KINDS)}"
        )
    if alerts.webhook and not str(alerts.webhook).startswith(("http://", "https://")):
        raise ConfigError(f"alerts.webhook={alerts.webhook!r} is not an http(s) URL")
    if not alerts.timeout_s > 0:
        raise ConfigError(f"alerts.timeout_s={alerts.timeout_s} must be positive")


def _check_validation(validation: DictConfig) -> None:
    """Values of ``conf/validation`` that types alone cannot check."""
    for check, severity in validation.severity.items():
        if check not in GATE_CHECKS:
            raise ConfigError(
                f"validation.severity.{check}: unknown check; known: {', '.join(GATE_CHECKS)}"
            )
        if severity not in SEVERITIES:
            raise ConfigError(
                f"validation.severity.{check}={severity!r} is not one of error, warning"
            )
    if validation.schema_changes not in SEVERITIES:
        raise ConfigError(
            f"validation.schema_changes={validation.schema_changes!r} is not one of error, warning"
        )
    for column, bound in validation.ranges.items():
        if not isinstance(bound, DictConfig) or set(bound) - {"min", "max"}:
            raise ConfigError(
                f"validation.ranges.{column} must be a mapping with keys min and/or max, "
                f"got {bound!r}"
            )
    for column, values in validation.categories.items():
        if not isinstance(values, ListConfig) or not values:
            raise ConfigError(f"validation.categories.{column} must be a non-empty list")
    fractions = {
        "validation.max_null_fraction": validation.max_null_fraction,
        "validation.quarantine.max_fraction": validation.quarantine.max_fraction,
        "validation.max_duplicate_fraction": validation.max_duplicate_fraction,
        "validation.max_not_dates_fraction": validation.max_not_dates_fraction,
        **{f"validation.null_fractions.{c}": f for c, f in validation.null_fractions.items()},
    }
    for where, value in fractions.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}={value} must be between 0 and 1")
    drift = validation.drift
    if drift.policy not in DRIFT_POLICIES:
        raise ConfigError(
            f"validation.drift.policy={drift.policy!r} is not one of {', '.join(DRIFT_POLICIES)}"
        )
    for kind, methods in DRIFT_METHODS.items():
        method = drift[f"{kind}_method"]
        if method not in methods:
            raise ConfigError(
                f"validation.drift.{kind}_method={method!r} is not one of {', '.join(methods)}"
            )
    if drift.bins < 2:
        raise ConfigError(f"validation.drift.bins={drift.bins} must be at least 2")
    if drift.text_vocabulary < 1:
        raise ConfigError(f"validation.drift.text_vocabulary={drift.text_vocabulary} must be >= 1")
    for key in ("datetime_before_fraction", "datetime_unparseable_increase"):
        if not 0.0 <= drift[key] <= 1.0:
            raise ConfigError(f"validation.drift.{key}={drift[key]} must be between 0 and 1")


def _check_bound(metric: str, bound: Any) -> None:
    if not isinstance(bound, DictConfig) or set(bound) - {"min", "max"}:
        raise ConfigError(
            f"evaluation.thresholds.{metric} must be a mapping with keys min and/or max, "
            f"got {bound!r}"
        )
    for key in ("min", "max"):
        value = bound.get(key)
        if value is not None and not isinstance(value, int | float):
            raise ConfigError(f"evaluation.thresholds.{metric}.{key}={value!r} is not a number")


def promotion_metric(cfg: DictConfig) -> tuple[str, bool]:
    """The metric promotion compares, and whether greater is better."""
    task = Task(cfg.data.task).value
    metric = cfg.promotion.metric
    if metric == "auto":
        metric = DEFAULT_PROMOTION_METRIC[task]
    return metric, METRICS[task][metric]


def split_overrides(text: str) -> list[str]:
    """Hydra overrides from one string (an MLproject parameter), split on whitespace outside
    quotes. Quotes are kept, because Hydra's grammar needs them (``+data.read_options.sep=';'``,
    ``data.path='/my data/x.csv'``); empty words (an empty default arrives as ``''``) are dropped.
    Raises ConfigError for an unclosed quote.
    """
    words: list[str] = []
    word, quote, escaped = "", None, False
    for char in text or "":
        if escaped:
            escaped = False
        elif quote and char == "\\":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char.isspace():
            words.append(word)
            word = ""
            continue
        word += char
    if quote:
        raise ConfigError(f"hydra_options: unclosed {quote} in {text!r}")
    words.append(word)
    return [w for w in words if w and w not in ("''", '""')]


def unquote_parameter(text: str) -> str:
    """An MLproject parameter as the command got it. MLflow's Kubernetes backend quotes each
    command word as for a shell but runs it without one: a value that is exactly one
    shell-quoted word is unquoted once (no Hydra override starts with a quote)."""
    stripped = (text or "").strip()
    if len(stripped) < 2 or stripped[0] not in "'\"":
        return text
    try:
        words = shlex.split(stripped)
    except ValueError:
        return text
    return words[0] if len(words) == 1 else text


# How a value Hydra's grammar cannot take unquoted (";", ",", spaces) is typed in a shell.
SHELL_QUOTED_EXAMPLE = "\"+data.read_options.sep=';'\""


def setting_value(setting: str) -> Any:
    """The value of ``key=value`` typed as Hydra types an override's (``2`` an int, ``';'``
    the string ``;``, ``[a,b]`` a list). The key is not read: a column name Hydra's grammar
    cannot hold (``Numéro``, ``od280/od315``) is still a key here.

    Raises ConfigError naming the setting when Hydra's grammar cannot read the value (in a
    shell, a quoted value needs the whole setting quoted again: ``"+data.read_options.sep=';'"``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = setting.partition("=")[2]
    try:
        return OverridesParser.create().parse_override(f"value={value}").value()
    except HydraException as exc:
        raise ConfigError(
            f"{setting!r}: Hydra cannot read the value {value!r} "
            f"({str(exc).splitlines()[0]}); quote a value with ';', ',' or spaces, and quote the "
            f"whole setting for the shell: {SHELL_QUOTED_EXAMPLE}"
        ) from exc


def column_setting(name: str, role: str) -> str:
    """How to give column ``name`` the role ``role`` on the command line, or in the data config
    when Hydra's grammar cannot name the column there (``Numéro``, ``a b``, ``od280/od315``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = f"+data.columns.{name}.role={role}"
    try:
        OverridesParser.create().parse_override(override)
    except HydraException:
        return (
            f"data.columns: {{{name!r}: {{role: {role}}}}} in the data config (the command line "
            f"cannot name column {name!r})"
        )
    return override


def hydra_quote(value: str) -> str:
    """``value`` as a quoted Hydra override value (paths with commas, spaces, brackets)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dotted_paths(cfg: DictConfig) -> list[str]:
    """The classes and functions ``cfg`` names by dotted path, in order: every ``_target_``
    (e.g. a feature transformer) and the model's estimator classes (``model.estimator``)."""
    paths: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and "." in target:
                paths[target] = None
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(OmegaConf.to_container(cfg, resolve=True))
    estimator = OmegaConf.select(cfg, "model.estimator")
    for value in estimator.values() if isinstance(estimator, DictConfig) else [estimator]:
        if isinstance(value, str) and "." in value:
            paths[value] = None
    return list(paths)


def config_slice(cfg: DictConfig, keys: list[str] | tuple[str, ...]) -> DictConfig:
    """The top-level ``keys`` of ``cfg``, resolved (interpolations such as ``${seed}`` may
    point outside the slice)."""
    return OmegaConf.create(
        {
            key: OmegaConf.to_container(cfg[key], resolve=True)
            if OmegaConf.is_config(cfg[key])
            else cfg[key]
            for key in keys
            if key in cfg
        }
    )


def resolved_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML text (what a run logs)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """Flatten a config into ``a.b.c -> value`` pairs, for MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and (node or not path):  # an empty root has no params
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        else:
            flat[path] = str(node.value if isinstance(node, Enum) else node)

    walk(container, prefix)
    return flat
