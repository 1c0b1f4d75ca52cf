"""pandera schemas for every dataset that crosses a stage boundary.

The columns of a user's dataset are only known at run time, so its schema (the data contract) is
either read from a pandera YAML file or inferred from the raw data, then shared by every later
dataset: validated data, train and test splits. Fixed-shape datasets are DataFrameModels.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from omegaconf import DictConfig
from pandera.typing import Series

from mlflow_pipeline.config import Task, column_role_setting
from mlflow_pipeline.dates import parse_dates
from mlflow_pipeline.errors import ConfigError

# The dtype of numeric features that are not integers (and of integers with missing values,
# which an int64 cannot hold and MLflow's signature cannot declare as ``long``).
NUMERIC_DTYPE = "float64"
# Integer columns with no missing values stay integers: a signature that calls them ``double``
# makes MLflow's pyfunc refuse the int64 columns pd.read_csv gives for the same file.
INTEGER_DTYPE = "int64"
# pandas' string dtype (pandas 3 default for text); missing values stay missing.
STRING_DTYPE = "str"


def raw_schema(target: str) -> pa.DataFrameSchema:
    """What ingest must hand over: a non-empty frame with the target column, any other columns."""
    return pa.DataFrameSchema(
        {target: pa.Column(required=True, nullable=True)},
        checks=[pa.Check(lambda df: len(df) > 0, element_wise=False, name="not_empty")],
        strict=False,
        name="raw",
    )


# A text column is inferred numeric when at least this fraction of its values are numbers:
# the rest are junk ("12kg", "?") that the gate then reports instead of a silent categorical.
NUMERIC_TEXT_FRACTION = 0.9

# What a column is to the model (``config.ROLES``). The contract records each feature
# column's role in its description (pandera YAML keeps descriptions, not metadata).
# Roles whose columns are never model features: an id one-hot encoded is noise that makes
# every new row "unseen".
NOT_FEATURES = ("id", "ignore")
# Roles that are features when the features option transforms them (``features.datetime``,
# ``features.text``): dates become numbers, free text a bounded TF-IDF.
TRANSFORMED_ROLES = ("datetime", "text")
# Roles whose values at scoring time are new as a rule (a new date, a new sentence, a new id):
# never held to the values seen in training.
NEW_VALUES_EXPECTED = ("datetime", "text", "id", "ignore")
ROLE_PREFIX = "role="
# A column is id-like when at least this fraction of its values present are distinct, in at
# least ID_MIN_ROWS rows (fewer rows say nothing); integer ones also need an id-like name or
# near-consecutive values, so that a measurement with distinct values stays a feature.
ID_DISTINCT_FRACTION = 0.95
ID_MIN_ROWS = 50
ID_NAME = re.compile(r"(^|[_\W])(id|uuid|guid|key)$|^id[_\W]|[a-z]Id$", re.IGNORECASE)
# Free text: strings longer than this (median characters) or with this many words (median),
# most of them distinct.
TEXT_MIN_LENGTH = 30
TEXT_MIN_WORDS = 5
TEXT_DISTINCT_FRACTION = 0.5
TEXT_MIN_DISTINCT = 20
# Short free text (names, titles): strings of at least this many words (median), most of them
# distinct but not nearly all (that is an id).
SHORT_TEXT_MIN_WORDS = 2
# Datetime: every distinct value (a sample of them) looks like a date and parses as one.
DATETIME_LIKE = re.compile(r"^\s*\d{1,4}[-/.]\d{1,2}([-/.]\d{1,4})?([ T]\d{1,2}:\d{2}.*)?\s*$")
DATETIME_SAMPLE = 1000


@dataclass(frozen=True)
class ColumnRole:
    """A column's role and why: ``reason`` is what was seen (inferred) or where it was set."""

    role: str
    reason: str
    inferred: bool = True

    @property
    def feature(self) -> bool:
        return self.role not in NOT_FEATURES

    def description(self) -> str:
        return f"{ROLE_PREFIX}{self.role}; {'inferred: ' if self.inferred else ''}{self.reason}"

    @classmethod
    def from_description(cls, text: str | None) -> ColumnRole | None:
        """The role a contract column's description records (None: none recorded)."""
        if not text or not text.startswith(ROLE_PREFIX):
            return None
        role, _, rest = text[len(ROLE_PREFIX) :].partition(";")
        rest = rest.strip()
        inferred = rest.startswith("inferred: ")
        reason = rest.removeprefix("inferred: ").split(" | ", 1)[0]
        return cls(role=role.strip(), reason=reason, inferred=inferred)


def infer_role(values: pd.Series, name: str) -> ColumnRole:
    """What a column looks like: id, text, datetime, integer, numeric or categorical."""
    if pd.api.types.is_bool_dtype(values):
        return ColumnRole("categorical", "true/false values")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_integer_dtype(values):
        # No copy without the missing values: a float column is decided by two passes at most.
        if values.isna().any() and _whole(values):
            return ColumnRole("integer", "whole numbers with missing values")
        return ColumnRole("numeric", "numbers")
    present = values.dropna()
    rows = len(present)
    if pd.api.types.is_integer_dtype(values):
        if _id_like_integers(present, str(name)):
            return ColumnRole("id", f"{present.nunique()} distinct in {rows} rows")
        return ColumnRole("integer", "whole numbers")
    if mostly_numbers(values):
        return ColumnRole("numeric", "text that is mostly numbers")
    texts = present.astype(str)
    distinct = texts.nunique()
    if rows and _dates(texts):
        return ColumnRole("datetime", f"every value present parses as a date ({distinct} distinct)")
    words = 0.0
    if rows and distinct >= TEXT_MIN_DISTINCT and distinct >= TEXT_DISTINCT_FRACTION * rows:
        length = texts.str.len().median()
        words = texts.str.split().str.len().median()
        if length > TEXT_MIN_LENGTH or words >= TEXT_MIN_WORDS:
            return ColumnRole(
                "text", f"free text: median {length:.0f} characters, {words:.0f} words"
            )
    if rows >= ID_MIN_ROWS and distinct >= ID_DISTINCT_FRACTION * rows:
        return ColumnRole("id", f"{distinct} distinct in {rows} rows")
    if words >= SHORT_TEXT_MIN_WORDS:
        # Names, titles: as categories most values would be seen once, and score would refuse
        # every new one; as words (TF-IDF), the ones they share are features.
        return ColumnRole(
            "text", f"short free text: {distinct} distinct in {rows} rows, median {words:.0f} words"
        )
    return ColumnRole("categorical", f"strings, {distinct} distinct in {rows} rows")


# How many values ``_whole`` looks at first: a column of fractions shows one within them.
WHOLE_PROBE = 4096


def _whole(values: pd.Series) -> bool:
    """Whether every finite value of ``values`` is a whole number (and there is one)."""
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    head = numbers[:WHOLE_PROBE]
    head = head[np.isfinite(head)]
    if not np.all(head == np.round(head)):
        return False
    finite = numbers[np.isfinite(numbers)]
    return bool(finite.size) and bool(np.all(finite == np.round(finite)))


def _id_like_integers(present: pd.Series, name: str) -> bool:
    rows = len(present)
    if rows < ID_MIN_ROWS:
        return False
    distinct = present.nunique()
    if distinct < ID_DISTINCT_FRACTION * rows:
        return False
    span = float(present.max()) - float(present.min()) + 1
    return bool(ID_NAME.search(name)) or span <= 2 * distinct


def _dates(texts: pd.Series) -> bool:
    distinct = pd.Series(texts.unique()[:DATETIME_SAMPLE])
    if not distinct.str.match(DATETIME_LIKE).all():
        return False
    parsed = pd.to_datetime(distinct, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def column_roles(
    df: pd.DataFrame,
    target: str,
    columns: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> dict[str, ColumnRole]:
    """The role of every column but the target: ``data.columns.<name>.role`` where set, then
    ``data.ignore_columns`` (role ignore), else inferred from the values.

    Raises ConfigError for a role on a column the data does not have, or an unknown role.
    """
    chosen = _configured_roles(df, target, columns or {})
    roles: dict[str, ColumnRole] = {}
    for name in df.columns:
        if name == target:
            continue
        if name in chosen:
            roles[name] = ColumnRole(chosen[name], f"data.columns.{name}.role", inferred=False)
        elif name in ignore:
            roles[name] = ColumnRole("ignore", "data.ignore_columns", inferred=False)
        else:
            roles[name] = infer_role(df[name], name)
    return roles


def _configured_roles(df: pd.DataFrame, target: str, columns: Mapping[str, Any]) -> dict[str, str]:
    roles = {}
    for name, spec in columns.items():
        if name == target:
            raise ConfigError(
                f"data.columns.{name}: '{name}' is the target (data.target), not a feature: it "
                "takes no role"
            )
        if name not in df.columns:
            raise ConfigError(
                f"data.columns.{name}: no feature column '{name}' in the data (columns: "
                f"{', '.join(str(c) for c in df.columns if c != target)})"
            )
        roles[name] = column_role_setting(name, spec)
    return roles


def contract_roles(contract: pa.DataFrameSchema) -> dict[str, ColumnRole]:
    """The roles a contract records, by column (columns with none recorded are left out)."""
    found = {}
    for name, column in contract.columns.items():
        role = ColumnRole.from_description(column.description)
        if role is not None:
            found[name] = role
    return found


def roles_left_out(features: Mapping[str, Any] | None) -> set[str]:
    """The roles whose columns a features option (``conf/features``) leaves out of the model:
    id and ignore always; datetime when ``features.datetime`` has no parts; text when
    ``features.text.mode`` is drop. A features config without these keys (recorded before they
    existed) leaves dates and text out, as models trained with it did."""
    left_out = set(NOT_FEATURES)
    if features is None:
        return left_out
    dates = features.get("datetime")
    if not dates or not dates.get("parts"):
        left_out.add("datetime")
    text = features.get("text")
    if not text or text.get("mode", "drop") == "drop":
        left_out.add("text")
    return left_out


def non_features(
    contract: pa.DataFrameSchema, features: Mapping[str, Any] | None = None
) -> list[str]:
    """The contract's columns whose role keeps them out of the model: ids and ignored columns,
    and with ``features`` (the features config the model was trained with) the datetime and
    text columns it leaves out (``roles_left_out``)."""
    left_out = roles_left_out(features)
    return [name for name, role in contract_roles(contract).items() if role.role in left_out]


def new_values_expected(contract: pa.DataFrameSchema) -> list[str]:
    """The contract's columns whose values need not have been seen in training (dates, free
    text, ids, ignored columns): scoring does not hold them to the training values."""
    return [
        name for name, role in contract_roles(contract).items() if role.role in NEW_VALUES_EXPECTED
    ]


def infer_contract(
    df: pd.DataFrame,
    target: str,
    task: Task,
    columns: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> pa.DataFrameSchema:
    """Infer the data contract from raw data.

    Integer columns stay int64 (with missing values: float64, role integer), other numbers
    and text that is mostly numbers become nullable floats, everything else nullable strings;
    a role set in ``columns`` (``data.columns``) decides the type where it names one
    (categorical and text: strings, numeric: float). Each column's role is recorded in its
    description. The target must be present and non-null (and numeric for regression). No
    unexpected columns.

    Raises ConfigError for a role on an unknown column or an unknown role.
    """
    roles = column_roles(df, target, columns, ignore)
    contract: dict[str, pa.Column] = {}
    for name, role in roles.items():
        contract[name] = pa.Column(
            _dtype(df[name], role.role),
            nullable=True,
            coerce=True,
            description=role.description(),
        )
    contract[target] = target_column(df[target], task)
    return pa.DataFrameSchema(contract, strict=True, coerce=True, name="contract")


def with_roles(
    contract: pa.DataFrameSchema,
    df: pd.DataFrame,
    target: str,
    columns: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> pa.DataFrameSchema:
    """A user's contract with the role of each column it declares recorded (its own
    description kept after it)."""
    present = [c for c in contract.columns if c in df.columns]
    roles = column_roles(df[present], target, columns, ignore)
    updated = copy.deepcopy(contract)
    for name, role in roles.items():
        column = updated.columns[name]
        recorded = ColumnRole.from_description(column.description)
        if recorded is not None and role.inferred:
            continue  # the schema file's own role stands over an inferred one
        own = None if recorded is not None else column.description
        column.description = role.description() + (f" | {own}" if own else "")
    return updated


def _dtype(values: pd.Series, role: str) -> str:
    if role in ("categorical", "text", "datetime"):
        return STRING_DTYPE
    if pd.api.types.is_bool_dtype(values):
        return STRING_DTYPE
    if role == "numeric":
        return NUMERIC_DTYPE
    if pd.api.types.is_integer_dtype(values):
        return INTEGER_DTYPE
    if pd.api.types.is_numeric_dtype(values) or mostly_numbers(values):
        return NUMERIC_DTYPE
    if role == "integer":  # an integer role on text: numbers, maybe with missing values
        return NUMERIC_DTYPE
    return STRING_DTYPE


def mostly_numbers(values: pd.Series) -> bool:
    """True when at least NUMERIC_TEXT_FRACTION of the values present parse as numbers."""
    return number_share(values)[0] >= NUMERIC_TEXT_FRACTION


def number_share(values: pd.Series) -> tuple[float, list[str]]:
    """The share of the values present that parse as numbers (0.0 without values), and the
    most frequent ones that do not (up to 3)."""
    counts = values.value_counts(dropna=True)  # each distinct text parsed once
    if counts.empty:
        return 0.0, []
    parsed = pd.to_numeric(counts.index.astype(str).str.strip(), errors="coerce")
    numbers = parsed.notna()
    others = [str(v) for v in counts.index[~numbers][:3]]
    return float(counts[numbers].sum() / counts.sum()), others


def target_column(target: pd.Series, task: Task) -> pa.Column:
    """The target column of the contract: never null, numeric for regression."""
    if Task(task) is Task.regression:
        return pa.Column(NUMERIC_DTYPE, nullable=False, coerce=True)
    if pd.api.types.is_integer_dtype(target) or pd.api.types.is_bool_dtype(target):
        return pa.Column("int64", nullable=False, coerce=True)
    if pd.api.types.is_numeric_dtype(target):
        # Float-coded classes (1.0, 0.0) stay floats; rows with no label fail the gate.
        return pa.Column(NUMERIC_DTYPE, nullable=False, coerce=True)
    return pa.Column(STRING_DTYPE, nullable=False, coerce=True)


def load_contract(path: str | Path, target: str) -> pa.DataFrameSchema:
    """Read a user's pandera YAML schema; it must declare the target column.

    Raises ConfigError when the file is missing or not a valid pandera schema.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.schema: no schema file at {path}")
    problem = _schema_file_problem(path)
    if problem:
        raise ConfigError(f"data.schema: {path} is not a valid pandera YAML schema: {problem}")
    try:
        schema = pa.DataFrameSchema.from_yaml(path)
    except Exception as exc:  # pandera raises many kinds for a bad file
        raise ConfigError(f"data.schema: {path} is not a valid pandera YAML schema: {exc}") from exc
    if target not in schema.columns:
        raise ConfigError(f"data.schema: {path} does not declare the target column '{target}'")
    return schema


def _schema_file_problem(path: Path) -> str | None:
    """What is structurally wrong with a schema file, in words (None: let pandera judge)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return f"it is not YAML ({exc})"
    if not isinstance(document, dict):
        return f"expected a mapping with 'schema_type' and 'columns', got {type(document).__name__}"
    columns = document.get("columns")
    if not isinstance(columns, dict):
        return (
            "'columns' must be a mapping of column name to its spec (dtype, nullable, checks), "
            f"got {type(columns).__name__}"
        )
    bad = [
        name for name, spec in columns.items() if spec is not None and not isinstance(spec, dict)
    ]
    if bad:
        return f"the spec of column(s) {', '.join(map(repr, bad))} must be a mapping"
    return None


def contract_to_yaml(schema: pa.DataFrameSchema) -> str:
    return schema.to_yaml()


def contract_from_yaml(text: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema.from_yaml(text)


def with_task_checks(contract: pa.DataFrameSchema, target: str, task: Task) -> pa.DataFrameSchema:
    """Add the dataset-level checks a model needs on top of the contract's column types."""
    what = "has at least 2 classes" if Task(task) is Task.classification else "is not constant"
    checks = [
        pa.Check(lambda df: len(df) > 0, element_wise=False, name="not_empty"),
        pa.Check(
            lambda df: df[target].nunique(dropna=True) >= 2,
            element_wise=False,
            name=f"target '{target}' {what}",
        ),
    ]
    combined = copy.deepcopy(contract)
    combined.checks = list(contract.checks or []) + checks
    return combined


# Checks about a whole column or frame (a fraction), not about rows: never quarantined.
AGGREGATE_CHECKS = ("null_fraction", "duplicate_rows", "not_empty", "target ", "not_dates")


@dataclass(frozen=True)
class _Rules:
    """Plain copies of ``conf/validation``'s rules: the gate looks them up a few times per
    column, and a DictConfig look-up (a missing key most of all) costs about a hundred times a
    dict's."""

    severities: dict[str, str]
    ranges: dict[str, Any]
    categories: dict[str, Any]
    unique: list[str]
    null_fractions: dict[str, Any]
    max_null_fraction: float | None
    finite: bool
    max_abs_value: float | None
    max_duplicate_fraction: float | None
    max_not_dates_fraction: float | None

    @classmethod
    def of(cls, rules: DictConfig) -> _Rules:
        return cls(
            severities=dict(rules.severity),
            ranges=dict(rules.ranges),
            categories=dict(rules.categories),
            unique=list(rules.unique),
            null_fractions=dict(rules.null_fractions),
            max_null_fraction=rules.max_null_fraction,
            finite=rules.finite,
            max_abs_value=rules.max_abs_value,
            max_duplicate_fraction=rules.max_duplicate_fraction,
            max_not_dates_fraction=rules.get("max_not_dates_fraction", 0.5),
        )


def gate(contract: pa.DataFrameSchema, cfg: DictConfig) -> Gate:
    """The gate at every boundary after ingest: the contract's types, the task's checks and
    the rules of ``conf/validation``, split by severity (``validation.severity``).

    Raises ConfigError when a rule names a column the contract does not have.
    """
    rules = _Rules.of(cfg.validation)
    target = cfg.data.target
    # A deep copy of the contract already: the rules are added to it, not to the contract.
    errors = with_task_checks(contract, target, cfg.data.task)
    warning_columns: dict[str, list[pa.Check]] = {}
    warning_frame: list[pa.Check] = []

    def add(column: str | None, name: str, check: pa.Check) -> None:
        error = rules.severities.get(name, "error") == "error"
        if column is None:
            (errors.checks if error else warning_frame).append(check)
        elif error:
            errors.columns[column].checks.append(check)
        else:
            warning_columns.setdefault(column, []).append(check)

    _check_rule_columns(contract, rules)
    for name, column in errors.columns.items():
        for rule, check in _column_checks(name, column, rules, target):
            add(name, rule, check)
    if rules.max_duplicate_fraction is not None:
        limit = float(rules.max_duplicate_fraction)
        add(
            None,
            "duplicate_rows",
            pa.Check(
                lambda df, m=limit: _duplicate_fraction_within(df, m),
                element_wise=False,
                name="duplicate_rows",
                error=f"duplicate_rows <= {limit:g}",
            ),
        )
    warnings = None
    if warning_columns or warning_frame:
        warnings = pa.DataFrameSchema(
            {
                n: pa.Column(checks=c, nullable=True, required=False)
                for n, c in warning_columns.items()
            },
            checks=warning_frame,
            name=f"{contract.name or 'contract'} (warnings)",
        )
    return Gate(schema=errors, warnings=warnings, target=target)


def _check_rule_columns(contract: pa.DataFrameSchema, rules: _Rules) -> None:
    """Raises ConfigError when a rule names a column the contract does not have."""
    for key, names in (
        ("ranges", rules.ranges),
        ("categories", rules.categories),
        ("unique", rules.unique),
        ("null_fractions", rules.null_fractions),
    ):
        unknown = [n for n in names if n not in contract.columns]
        if unknown:
            raise ConfigError(
                f"validation.{key}: no column {', '.join(map(repr, unknown))} in the data "
                f"(columns: {', '.join(map(str, contract.columns))})"
            )


def _column_checks(
    name: str, column: pa.Column, rules: _Rules, target: str
) -> list[tuple[str, pa.Check]]:
    """The rule checks of one column, as (rule name, check), in the order they run."""
    checks: list[tuple[str, pa.Check]] = []
    numeric = str(column.dtype) in (NUMERIC_DTYPE, "int64")
    if numeric and rules.finite:
        checks.append(
            ("finite", pa.Check(_no_infinity, ignore_na=False, name="finite", error="finite"))
        )
    if numeric and rules.max_abs_value is not None:
        limit = float(rules.max_abs_value)
        check = pa.Check(
            lambda s, m=limit: _within(s, m),
            ignore_na=False,
            name="max_abs_value",
            error=f"max_abs_value({limit:g})",
        )
        checks.append(("max_abs_value", check))
    limit = rules.null_fractions.get(name, rules.max_null_fraction)
    if name != target and limit is not None and limit < 1.0:
        check = _share_check("null_fraction", _null_fraction_within, limit)
        checks.append(("null_fraction", check))
    dates = ColumnRole.from_description(column.description)
    if dates is not None and dates.role == "datetime" and rules.max_not_dates_fraction is not None:
        limit = float(rules.max_not_dates_fraction)
        checks.append(("not_dates", _share_check("not_dates", _not_dates_within, limit)))
    if name in rules.ranges and not numeric:
        raise ConfigError(
            f"validation.ranges.{name}: column '{name}' is not numeric ({column.dtype})"
        )
    if name in rules.ranges:
        low, high = rules.ranges[name].get("min"), rules.ranges[name].get("max")
        check = pa.Check(
            lambda s, lo=low, hi=high: _in_range(s, lo, hi),
            ignore_na=False,
            name="in_range",
            error=f"in_range({low}, {high})",
        )
        checks.append(("in_range", check))
    if name in rules.categories:
        allowed = list(rules.categories[name])
        if not numeric:
            allowed = [str(v) for v in allowed]
        check = pa.Check(
            lambda s, a=tuple(allowed): _allowed(s, a),
            ignore_na=False,
            name="allowed_categories",
            error=f"allowed_categories({allowed})",
        )
        checks.append(("allowed_categories", check))
    if name in rules.unique:
        checks.append(
            ("unique", pa.Check(_distinct, ignore_na=False, name="unique", error="unique"))
        )
    return checks


# The rules below are pandera checks with ignore_na=False: a missing value passes by how each
# is written, so pandera need not copy every column without its missing values first. Each
# returns True when every value passes, and the per-value result (for the failure cases)
# only when some value fails.


def _numbers(values: pd.Series) -> pd.Series:
    """A numeric column as numbers: values that failed coercion are reported by
    ``coerce_dtype`` already and count as missing here."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    return pd.to_numeric(values, errors="coerce")


def _no_infinity(values: pd.Series) -> bool | pd.Series:
    infinite = np.isinf(_numbers(values))
    return True if not infinite.any() else ~infinite


def _within(values: pd.Series, limit: float) -> bool | pd.Series:
    numbers = _numbers(values)
    beyond = numbers.abs() > limit  # missing: False; +/-inf is the finite check's to report
    return True if not beyond.any() else ~beyond | np.isinf(numbers)


def _in_range(values: pd.Series, low: float | None, high: float | None) -> bool | pd.Series:
    numbers = _numbers(values)
    outside = pd.Series(False, index=values.index)
    if low is not None:
        outside |= numbers < low
    if high is not None:
        outside |= numbers > high
    return True if not outside.any() else ~outside


def _share_check(name: str, within: Any, limit: float) -> pa.Check:
    """A check of a whole column, ``name <= limit``: ``within(values, limit)`` says if it passes."""
    return pa.Check(
        lambda s, m=limit: within(s, m),
        element_wise=False,
        ignore_na=False,
        name=name,
        error=f"{name} <= {limit:g}",
    )


def _null_fraction_within(values: pd.Series, limit: float) -> bool:
    return bool(values.isna().mean() <= limit)


# not_dates parses this many randomly drawn values of a longer column first, and settles on
# them when their share is clear of the limit (at most half of it, or beyond halfway from it
# to all): a million distinct timestamps take about a second to parse, a million values that
# are not dates a quarter of a minute (each tried in every format).
NOT_DATES_PROBE = 4096


@dataclass(frozen=True)
class NotDates:
    """What ``not_dates`` counted in a column: ``count`` of ``looked_at`` values present are
    not dates (``present`` in all; fewer looked at when a probe settled it)."""

    count: int
    looked_at: int
    present: int
    examples: tuple[str, ...]

    def within(self, limit: float) -> bool:
        return self.count <= limit * self.looked_at


def not_a_date(values: pd.Series) -> np.ndarray:
    """Per value of ``values`` (missing values dropped first): True where it is not a date, a
    plain number or text the drift check does not parse as one (the datetime features read a
    plain number as missing: a parser would read "12" as a day of this month)."""
    number = pd.to_numeric(values.astype(str).str.strip(), errors="coerce").notna()
    return number.to_numpy() | parse_dates(values).isna().to_numpy()


def not_dates(values: pd.Series, limit: float) -> NotDates:
    """The values of ``values`` present that do not read as dates (plain numbers, and text
    the drift check does not parse as one), counted on a probe when it settles
    ``share <= limit``, else on every value."""
    present = values.dropna()

    def count(part: pd.Series) -> NotDates:
        others = part[not_a_date(part)]
        shown = tuple(str(v) for v in others.unique()[:3])
        return NotDates(len(others), len(part), len(present), shown)

    if len(present) > 2 * NOT_DATES_PROBE:
        # Random rows, seeded: evenly spaced ones would alias a pattern repeating in the rows.
        probe = count(present.sample(NOT_DATES_PROBE, random_state=0))
        if not limit / 2 < probe.count / probe.looked_at < (1 + limit) / 2:
            return probe
    return count(present)


def _not_dates_within(values: pd.Series, limit: float) -> bool:
    return not_dates(values, limit).within(limit)


def _allowed(values: pd.Series, allowed: tuple) -> bool | pd.Series:
    ok = values.isin(allowed) | values.isna()
    return True if ok.all() else ok


def _distinct(values: pd.Series) -> bool | pd.Series:
    repeated = values.duplicated(keep=False) & values.notna()
    return True if not repeated.any() else ~repeated


def _duplicate_fraction_within(df: pd.DataFrame, limit: float) -> bool:
    # As df.duplicated().mean() <= limit: an empty frame's mean is NaN, which fails.
    return bool(duplicate_rows(df) / len(df) <= limit) if len(df) else False


def duplicate_rows(df: pd.DataFrame) -> int:
    """How many rows repeat an earlier row: ``df.duplicated().sum()``, with the same
    equality (by ``factorize``: missing values equal each other).

    Column by column (numbers first), only rows that still share every value so far with
    another row go on: a column of distinct or nearly distinct values (an id, a measurement)
    settles it after one column, where ``df.duplicated()`` factorizes every column of every
    row.
    """
    if df.shape[1] < 2 or len(df) == 0:
        return int(df.duplicated().sum())
    numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in df.dtypes]
    order = [i for i, n in enumerate(numeric) if n] + [i for i, n in enumerate(numeric) if not n]
    rows: np.ndarray | None = None  # positions of the rows still in play (None: all)
    groups = np.zeros(len(df), dtype="int64")  # rows equal in every column so far share one
    counts = np.zeros(0, dtype="int64")
    for position in order:
        column = df.iloc[:, position]
        codes, uniques = (column if rows is None else column.take(rows)).factorize()
        key = groups * (len(uniques) + 1) + codes + 1  # missing values: code -1 -> 0
        groups = key if counts.size == 0 else pd.factorize(key)[0]
        counts = np.bincount(groups)
        shared = counts[groups] > 1
        if not shared.all():
            rows = np.flatnonzero(shared) if rows is None else rows[shared]
            groups = groups[shared]
            if rows.size == 0:
                return 0
    # Every row left shares its values with at least one other: all but one per group repeat.
    return int(groups.size - np.count_nonzero(counts > 1))


@dataclass
class Gate:
    """A dataset's gate: ``schema`` holds the error checks (types, nulls, rules of severity
    error); ``warnings`` the checks of severity warning (reported, never stopping); at the
    validate stage, ``quarantine`` is the largest fraction of rows that may be dropped for
    failing row-level error checks (None: no quarantine); ``target``: the model's target column."""

    schema: pa.DataFrameSchema
    warnings: pa.DataFrameSchema | None = None
    quarantine: float | None = None
    # The model's target column (a failure in it may mean the task is the wrong one).
    target: str | None = None


class Metrics(pa.DataFrameModel):
    """Evaluation output: one row per metric computed on the test set."""

    metric: Series[str] = pa.Field(unique=True)
    value: Series[float] = pa.Field(nullable=False)

    class Config:
        strict = True
        coerce = True
        name = "metrics"


@dataclass
class TrainedModel:
    """The train stage's output: the fitted Pipeline, a few input rows as an example for the
    model signature, and (once logged) the model's URI in MLflow."""

    estimator: Any
    input_example: pd.DataFrame
    uri: str | None = None
