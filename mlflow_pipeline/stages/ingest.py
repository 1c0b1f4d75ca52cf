"""ingest: read the raw dataset named by ``cfg.data`` (a bundled dataset or a CSV file)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.errors import ConfigError, DataError

STAGE = "ingest"


def ingest(cfg: DictConfig) -> dict[str, pd.DataFrame]:
    """Returns ``{"raw": frame}``. Raises DataError when the data cannot be read at all."""
    data = cfg.data
    if data.source == "sklearn":
        return {"raw": load_bundled(data.loader, data.target)}
    read_options = OmegaConf.to_container(data.read_options, resolve=True)
    return {"raw": read_csv(Path(data.path), read_options)}


def load_bundled(loader: str, target: str) -> pd.DataFrame:
    """A dataset bundled with a package (e.g. ``sklearn.datasets.load_breast_cancer``)."""
    try:
        load = get_method(loader)
    except Exception as exc:  # hydra wraps import failures in several types
        raise ConfigError(f"data.loader: cannot import {loader!r}: {exc}", stage=STAGE) from exc
    frame = load(as_frame=True).frame
    if "target" in frame.columns and target != "target":
        frame = frame.rename(columns={"target": target})
    return frame


def read_csv(path: Path, read_options: dict) -> pd.DataFrame:
    """Read a CSV file, turning every way it can be unreadable into one DataError."""
    if not path.exists():
        where = "" if path.is_absolute() else f" (resolved from {Path.cwd()})"
        raise DataError(f"data.path: no file at {path.resolve()}{where}", stage=STAGE)
    if not path.is_file():
        raise DataError(f"data.path: {path.resolve()} is not a file", stage=STAGE)
    try:
        return pd.read_csv(path, **read_options)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data.path: {path} is empty (no header, no rows)", stage=STAGE) from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data.path: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "set data.read_options.encoding",
            stage=STAGE,
        ) from exc
    except (pd.errors.ParserError, ValueError, TypeError) as exc:
        raise DataError(f"data.path: cannot parse {path} as CSV: {exc}", stage=STAGE) from exc
