"""ingest: read the raw dataset named by ``cfg.data`` (a bundled dataset or a CSV file)."""

from __future__ import annotations

import codecs
import csv
import difflib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.errors import ConfigError, DataError

STAGE = "ingest"
log = logging.getLogger(__name__)

# Separators a file that parsed into one column is probably using instead of commas.
LIKELY_SEPARATORS = (";", "\t", "|")
# read_options that change what the last line of the file means; with any of them (or with a
# header row other than the first line) the truncation check is left to pandas.
TAIL_OPTIONS = (
    "usecols",
    "index_col",
    "compression",
    "skipfooter",
    "comment",
    "lineterminator",
    "quotechar",
    "quoting",
    "escapechar",
    "doublequote",
)
# Options of the full read that the header peek must not apply to the header row.
NOT_FOR_PEEK = (
    "header",
    "usecols",
    "index_col",
    "dtype",
    "converters",
    "parse_dates",
    "date_format",
    "nrows",
    "chunksize",
    "iterator",
    "skipfooter",
    "na_values",
    "keep_default_na",
    "na_filter",
    "true_values",
    "false_values",
)
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
# How far from the end the truncation check looks for the last line.
TAIL_BYTES = 1 << 16


def ingest(cfg: DictConfig) -> dict[str, pd.DataFrame]:
    """Returns ``{"raw": frame}``. Raises DataError when the data cannot be read at all."""
    data = cfg.data
    if data.source == "sklearn":
        return {"raw": load_bundled(data.loader, data.target)}
    read_options = OmegaConf.to_container(data.read_options, resolve=True)
    raw = read_csv(Path(data.path), read_options)
    if data.target not in raw.columns:  # ingest's output gate stops the run; say which setting
        log.warning("[%s] %s", STAGE, _no_target_column(str(data.target), raw.columns, data.path))
    return {"raw": raw}


def _no_target_column(target: str, columns: pd.Index, path: str) -> str:
    """``data.target`` names no column of the file: the columns, and the likeliest one."""
    names = [str(c) for c in columns]
    close = difflib.get_close_matches(target, names, n=1, cutoff=0.6)
    shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
    hint = f"; did you mean data.target={close[0]}?" if close else ""
    return f"data.target: no column '{target}' in {path} (columns: {shown}){hint}"


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
    """Read a CSV file with ``pandas.read_csv(path, **read_options)``.

    Raises DataError (naming the file and what is wrong with it) when it is missing, not a
    file, empty, only a header, not text in the expected encoding, separated by something else
    than ``sep``, has duplicate column names, or is malformed or truncated; ConfigError when
    ``read_options`` are not valid ``read_csv`` options.
    """
    if not path.exists():
        where = "" if path.is_absolute() else f" (resolved from {Path.cwd()})"
        raise DataError(f"data.path: no file at {path.resolve()}{where}", stage=STAGE)
    if not path.is_file():
        raise DataError(f"data.path: {path.resolve()} is not a file", stage=STAGE)
    options = _normalised(read_options)
    try:
        header = _header(path, options)
        if header is not None:
            _check_header(path, header, options)
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data.path: {path} is empty (no header, no rows)", stage=STAGE) from exc
    except UnicodeDecodeError as exc:
        raise _not_text(path, exc) from exc
    except LookupError as exc:  # an encoding Python does not know
        raise ConfigError(f"data.read_options.encoding: {exc}", stage=STAGE) from exc
    except TypeError as exc:  # an option read_csv does not take
        raise ConfigError(f"data.read_options: {exc}{_option_hint(options)}", stage=STAGE) from exc
    except pd.errors.ParserError as exc:
        raise DataError(
            f"data.path: cannot parse {path} as CSV: {_parser_detail(exc)}", stage=STAGE
        ) from exc
    except ValueError as exc:
        raise DataError(f"data.path: cannot parse {path} as CSV: {exc}", stage=STAGE) from exc
    except OSError as exc:
        raise DataError(f"data.path: cannot read {path}: {exc.strerror}", stage=STAGE) from exc
    if len(frame) == 0:
        raise DataError(f"data.path: {path} has a header but no data rows", stage=STAGE)
    if header is not None:
        _check_last_line(path, frame, len(header), options)
    return frame


def _option_hint(options: dict) -> str:
    """ "; did you mean 'sep'?" for an option name ``pandas.read_csv`` does not take but that is
    close to one it does ("" when none is)."""
    import difflib
    import inspect

    known = list(inspect.signature(pd.read_csv).parameters)
    # Words a user may spell out for a short option name.
    spelled = {"separator": "sep", **{name: name for name in known}}
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, list(spelled), n=1)
            if close:
                return f"; did you mean data.read_options.{spelled[close[0]]} (not {name})?"
    return ""


def _normalised(read_options: dict) -> dict:
    """``read_options`` as pandas takes them: a ``'\\t'`` separator typed on the command line
    reaches us as backslash + t, and means a tab."""
    options = dict(read_options)
    for key in ("sep", "delimiter"):
        if options.get(key) == "\\t":
            options[key] = "\t"
    return options


def _header(path: Path, options: dict) -> list[str] | None:
    """The fields of the header row as pandas splits them (same separator, encoding, quoting,
    compression), reading only the start of the file; None when the options say there is no
    header row to check."""
    if "names" in options or options.get("header", "infer") not in ("infer", 0):
        return None
    peek = {k: v for k, v in options.items() if k not in NOT_FOR_PEEK}
    if peek.get("engine") == "pyarrow":  # it cannot stop after one row
        del peek["engine"]
    first = pd.read_csv(path, **peek, header=None, nrows=1, dtype=str, na_filter=False)
    return [str(value) for value in first.iloc[0]] if len(first) else None


def _check_header(path: Path, header: list[str], options: dict) -> None:
    """Raises DataError for a header that is one column holding another separator, or that
    repeats a column name (pandas would silently rename the second ``a`` to ``a.1``)."""
    if len(header) == 1 and "sep" not in options and "delimiter" not in options:
        counts = {sep: header[0].count(sep) for sep in LIKELY_SEPARATORS}
        sep = max(counts, key=counts.__getitem__)
        if counts[sep]:
            shown = _shorten(header[0])
            typed = "\\t" if sep == "\t" else sep
            raise DataError(
                f"data.path: {path} has one column {shown!r}: it looks '{typed}'-separated; "
                f"set data.read_options.sep='{typed}' (on the command line, quoted for the "
                f"shell: \"+data.read_options.sep='{typed}'\")",
                stage=STAGE,
            )
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        if name:
            positions.setdefault(name, []).append(number)
    duplicates = [
        f"{name!r} (columns {_join(numbers)})"
        for name, numbers in positions.items()
        if len(numbers) > 1
    ]
    if duplicates:
        raise DataError(
            f"data.path: {path} has duplicate column names: {', '.join(duplicates)}", stage=STAGE
        )


def _check_last_line(path: Path, frame: pd.DataFrame, width: int, options: dict) -> None:
    """Raises DataError when the file ends in the middle of a row: no line break at the end,
    fewer fields on the last line than in the header, and pandas filled the rest with nulls.

    Reads only the end of the file; skipped for compressed files and unusual CSV dialects.
    """
    sep = options.get("sep", options.get("delimiter", ","))
    if (
        not isinstance(sep, str)
        or len(sep) != 1
        or any(key in options for key in TAIL_OPTIONS)
        or path.name.lower().endswith(COMPRESSED_SUFFIXES)
    ):
        return
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        fh.seek(max(0, size - TAIL_BYTES))
        tail = fh.read()
    if tail.endswith((b"\n", b"\r")) or (b"\n" not in tail and size > TAIL_BYTES):
        return
    last = tail.rsplit(b"\n", 1)[-1].decode(options.get("encoding") or "utf-8", "replace")
    try:
        fields = next(csv.reader([last], delimiter=sep), [])
    except csv.Error:  # not a line on its own (a quoted line break, a lone carriage return)
        return
    # A complete last row whose quoted field holds a line break also looks short from here:
    # pandas read it whole, so its last fields are not all null.
    if len(fields) < width and frame.iloc[-1, len(fields) :].isna().all():
        raise DataError(
            f"data.path: {path} looks truncated: its last line (data row {len(frame)}) has "
            f"{len(fields)} of {width} fields and no line break at the end",
            stage=STAGE,
        )


def _not_text(path: Path, exc: UnicodeDecodeError) -> DataError:
    """The error for a file that is not text in the expected encoding, locating the first
    bad byte in the file (pandas reports it relative to the block it was decoding)."""
    name = "UTF-8" if codecs.lookup(exc.encoding).name == "utf-8" else exc.encoding
    where = _first_undecodable(path, exc.encoding)
    if where is None:  # the file changed since pandas read it
        location = exc.reason
    else:
        offset, line, byte, reason = where
        location = f"byte 0x{byte:02x} on line {line}, offset {offset}: {reason}"
    encoding, why = likely_encoding(path)
    return DataError(
        f"data.path: {path} is not {name} text ({location}); set data.read_options.encoding "
        f"(+data.read_options.encoding={encoding} on the command line, {why})",
        stage=STAGE,
    )


# Byte order marks a file may start with, and the encoding that reads past them.
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def likely_encoding(path: Path) -> tuple[str, str]:
    """The encoding to suggest for a file that is not UTF-8, and why: the one its byte order
    mark names (a spreadsheet's "Unicode text" export is UTF-16), else latin-1 as an example."""
    with path.open("rb") as fh:
        start = fh.read(4)
    for mark, encoding in BYTE_ORDER_MARKS:
        if start.startswith(mark):
            return encoding, f"as its first bytes, a {encoding.upper()} byte order mark, say"
    return "latin-1", "for example"


def _first_undecodable(path: Path, encoding: str) -> tuple[int, int, int, str] | None:
    """(byte offset, line number, byte value, reason) of the first byte ``encoding`` cannot
    decode, or None when it decodes the whole file."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = newlines = 0
    for chunk, final in _chunks(path):
        try:
            decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            # exc.object is what the decoder still held of the last chunk (never a line
            # break: an incomplete character), then this chunk.
            held = max(0, len(exc.object) - len(chunk))
            line = newlines + exc.object[held : exc.start].count(b"\n") + 1
            return offset - held + exc.start, line, exc.object[exc.start], exc.reason
        offset += len(chunk)
        newlines += chunk.count(b"\n")
    return None


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[tuple[bytes, bool]]:
    with path.open("rb") as fh:
        chunk = fh.read(size)
        while chunk:
            following = fh.read(size)
            yield chunk, not following
            chunk = following


def _parser_detail(exc: pd.errors.ParserError) -> str:
    """pandas' parser message, saying that the file is truncated or malformed and on which
    (1-based) line."""
    detail = str(exc).removeprefix("Error tokenizing data. C error: ").strip()
    unclosed = re.search(r"EOF inside string starting at row (\d+)", detail)
    if unclosed:
        # The C parser counts rows from 0, header included.
        line = int(unclosed.group(1)) + 1
        return (
            f"the file is truncated or malformed: the quoted field opened on line {line} "
            "is never closed"
        )
    return f"the file is truncated or malformed: {detail}"


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _join(numbers: list[int]) -> str:
    shown = [str(n) for n in numbers]
    return f"{', '.join(shown[:-1])} and {shown[-1]}"
