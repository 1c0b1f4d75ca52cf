"""The content-addressed stage cache: what a stage's result depends on, as one key.

A stage run's cache key is the SHA-256 of its manifest: the code it runs (the stage function, its
gate and schema functions, and every function, class and constant of the same package they
reach, compared as syntax trees so docstrings, comments and formatting do not count), its
resolved slice of the config, the content digests of its inputs and of the files its config
names, the code of its input/output schemas, and the versions of the packages that matter.

A FINISHED run tagged ``pipeline.cache.stored=true`` (set only after its outputs were validated,
every artifact logged and its gate passed) with the same key is reused instead of running the
stage again. On a miss, the manifest is compared with the stage's previous run to say why.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import enum
import functools
import hashlib
import inspect
import json
import linecache
import os
import re
import stat
import sys
import textwrap
import time
import tokenize
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import config_slice, dotted_paths, flatten
from mlflow_pipeline.redaction import redacted
from mlflow_pipeline.store.lineage import package_versions
from mlflow_pipeline.tags import Cache, Runs

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from mlflow_pipeline.engine.spec import Stage

# Bump when what goes into a key changes: every earlier run then misses once.
CACHE_FORMAT = 1
MANIFEST = "cache.json"
# A run that changed its stage's contexts: its manifest as the run left them (Cache.KEY_AFTER).
MANIFEST_AFTER = "cache_after.json"

# Packages every stage's result depends on; stages add their own (Stage.packages).
BASE_PACKAGES = ("numpy", "pandas", "pyarrow", "pandera")
PACKAGE_ROOT = "mlflow_pipeline"
_PLAIN = (str, int, float, bool, bytes, type(None), enum.Enum)


# ------------------------------------------------------------------------------------ code
def source_of(obj: Any) -> str:
    """The source text of a function or class (the place tests change code through)."""
    try:
        return _source(obj)
    except TypeError as exc:  # unhashable: not cached
        if "unhashable" not in str(exc):
            raise
        return textwrap.dedent(inspect.getsource(obj))


_SOURCE_OF = source_of


@functools.lru_cache(maxsize=4096)
def _source(obj: Any) -> str:
    """Looked up once per process per object: every stage reaches the same helpers, and
    ``inspect.getsource`` of a class parses its whole module."""
    return textwrap.dedent(inspect.getsource(obj))


def code_hashes(objects: Iterable[Any]) -> dict[str, str]:
    """``"path.py:qualname" -> hash`` for ``objects`` and everything of their packages they
    reach (functions, classes, plain constants), transitively.

    A function's hash is the hash of its syntax tree without docstrings, so comments, blank
    lines, docstrings and moving code around do not change it; any other edit does.
    """
    objects = [o for o in objects if o is not None]
    roots = {PACKAGE_ROOT, *(_top_package(o) for o in objects)}
    hashes: dict[str, str] = {}
    stack = list(objects)
    seen: set[int] = set()
    files: dict[str, str | None] = {}  # source file -> content hash, read once per call
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        analysis = _analysis(obj, files)
        hashes[_ident(obj)] = analysis.digest
        if analysis.names is None:
            continue
        namespace = _namespace(obj)
        for name, value in _resolve(analysis.names, namespace):
            if _is_code(value) and _top_package(value) in roots:
                stack.append(value)
            elif _is_plain(value) and _top_package_of_module(namespace) in roots:
                module = namespace.get("__name__", "?")
                hashes[f"{_module_file(module)}:{name}"] = _sha(_stable_repr(value))
    return dict(sorted(hashes.items()))


def _stable_repr(value: Any) -> str:
    """``repr`` that is the same in every process: a set's order follows string hashing, which
    Python randomises per process."""
    if isinstance(value, set | frozenset):
        return f"{type(value).__name__}({sorted(map(_stable_repr, value))})"
    return repr(value)


def _is_code(value: Any) -> bool:
    return isinstance(value, types.FunctionType | type) or (
        callable(value) and hasattr(value, "__wrapped__")
    )


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


def _top_package(obj: Any) -> str:
    return (getattr(obj, "__module__", None) or "").split(".")[0]


def _top_package_of_module(namespace: dict[str, Any]) -> str:
    return str(namespace.get("__name__", "")).split(".")[0]


def _namespace(obj: Any) -> dict[str, Any]:
    obj = inspect.unwrap(obj)
    if isinstance(obj, types.FunctionType):
        return obj.__globals__
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    return vars(module) if module else {}


def _module_file(module_name: str) -> str:
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        return module_name
    top = sys.modules.get(module_name.split(".")[0])
    base = Path(getattr(top, "__file__", path)).resolve().parent.parent
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except ValueError:
        return Path(path).name


def _ident(obj: Any) -> str:
    obj = inspect.unwrap(obj)
    return f"{_module_file(obj.__module__)}:{obj.__qualname__}"


@dataclass(frozen=True)
class _Analysis:
    """What hashing a definition needs from its source: the hash of its syntax tree and the
    names it uses (``names``: None when the source does not parse alone)."""

    digest: str
    names: tuple[tuple[str, ...], ...] | None


# Each object's analysis in this process: the code it runs does not change under it, even
# when its file is edited meanwhile (as ``_source`` keeps the text it read first).
_analysed: dict[Any, _Analysis] = {}


def _analysis(obj: Any, files: dict[str, str | None]) -> _Analysis:
    """``obj``'s analysis: this process's, else the memo's when its source file's content was
    analysed before, else from its source (and then remembered).

    The source of a function is its file's lines from its first line, of a class the block
    its qualified name finds in its file: a function of the file's content, so the analysis
    is kept under the hash of that content (``_AnalysisMemo``). ``files`` holds the content
    hashes this call has read."""
    if source_of is not _SOURCE_OF:  # a test changing code through source_of
        return _analysis_of_source(obj)
    try:
        return _analysed[obj]
    except (KeyError, TypeError):  # not seen, or unhashable
        pass
    found = _remembered(obj, files)
    try:
        _analysed[obj] = found
    except TypeError:
        pass
    return found


def _remembered(obj: Any, files: dict[str, str | None]) -> _Analysis:
    place = _place(obj)
    content = _content_hash(place[0], files) if place else None
    if place is None or content is None:
        return _analysis_of_source(obj)
    key = f"{content}:{place[1]}"
    found = _ANALYSES.get(key)
    if found is not None:
        return found
    try:
        text = source_of(obj)
    except (OSError, TypeError):  # its bytecode stands in: not a function of the file's content
        return _bytecode_analysis(obj)
    found = _analysis_of_text(text)
    if _comes_from(text, obj, place[0], content):
        _ANALYSES.put(key, found)
    return found


def _comes_from(text: str, obj: Any, path: str, content: str) -> bool:
    """Whether ``text`` (this process's source of ``obj``, maybe read before an edit) is what
    the file ``path`` holding ``content`` gives: read again from disk, and the file hashed
    again after that. Only then may the analysis be kept under ``content``."""
    try:
        for name in {path, inspect.getsourcefile(obj)}:
            linecache.cache.pop(name, None)  # a stale entry's size and mtime can still match
        fresh = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return False
    return fresh == text and _content_hash(path, {}) == content


def _analysis_of_source(obj: Any) -> _Analysis:
    try:
        text = source_of(obj)
    except (OSError, TypeError):
        return _bytecode_analysis(obj)
    return _analysis_of_text(text)


def _bytecode_analysis(obj: Any) -> _Analysis:
    """No source (built at runtime): its bytecode stands in."""
    code = getattr(inspect.unwrap(obj), "__code__", None)
    return _Analysis(_sha(repr(code.co_code) if code else repr(obj)), None)


@functools.lru_cache(maxsize=4096)
def _analysis_of_text(text: str) -> _Analysis:
    tree, digest = _parse_text(text)
    return _Analysis(digest, None if tree is None else tuple(_names(tree)))


def _place(obj: Any) -> tuple[str, str] | None:
    """The file that holds ``obj``'s source and where in it: the qualified name (and the first
    line of a function, or of a class where Python records it); None for anything else."""
    target = inspect.unwrap(obj)
    if isinstance(target, types.FunctionType):
        path = target.__code__.co_filename
        where = f"{target.__qualname__}@{target.__code__.co_firstlineno}"
    elif isinstance(target, type):
        path = getattr(sys.modules.get(target.__module__), "__file__", None)
        where = f"{target.__qualname__}@{getattr(target, '__firstlineno__', '')}"
    else:
        return None
    return (path, where) if path else None


def _content_hash(path: str, files: dict[str, str | None]) -> str | None:
    """SHA-256 of the regular file ``path`` (remembered in ``files``); None if it is not one."""
    if path not in files:
        files[path] = None
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            pass
    return files[path]


class _AnalysisMemo:
    """Analyses kept across processes, in ``<XDG cache>/mlflow_pipeline/``: every cold run and
    every stage of runner=projects would otherwise read and parse the same sources again
    (~0.5 s). New analyses are written when the process exits. The file is named after this
    module's own content and the Python version, so a change to how code is analysed, or to
    the parser, starts a new one. Best effort: an unreadable or damaged file is an empty
    memo, and a write that fails is skipped."""

    LIMIT = 4_000  # entries kept (~1 KB each); the least recently used go first
    STALE_DAYS = 30

    def __init__(self) -> None:
        self._entries: dict[str, list[Any]] | None = None
        self._dirty = False

    @functools.cached_property
    def path(self) -> Path | None:
        """None where there is no cache directory (no home): no memo then."""
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        try:  # a relative XDG_CACHE_HOME is to be ignored (the XDG base directory spec)
            base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
            own = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
        except (RuntimeError, OSError):
            return None
        version = f"{sys.version_info.major}{sys.version_info.minor}"
        return base / "mlflow_pipeline" / f"code-analysis-py{version}-{own}.json"

    def _load(self) -> dict[str, list[Any]]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, list[Any]]:
        if self.path is None:
            return {}
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str) -> _Analysis | None:
        entries = self._load()
        entry = entries.get(key)
        try:
            digest, names = entry  # type: ignore[misc]
            if not isinstance(digest, str):
                return None
            found = _Analysis(digest, None if names is None else tuple(tuple(n) for n in names))
        except (TypeError, ValueError):
            return None
        entries[key] = entries.pop(key)  # the last used go last (kept longest when written)
        return found

    def put(self, key: str, analysis: _Analysis) -> None:
        names = None if analysis.names is None else [list(n) for n in analysis.names]
        self._load()[key] = [analysis.digest, names]
        if not self._dirty:  # written once, when the process exits
            atexit.register(self.save)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty or self._entries is None:
            return
        self._dirty = False
        if self.path is None:
            return
        # What other processes wrote since this one read the file, then this one's.
        entries = {**self._read(), **self._entries}
        entries = dict(list(entries.items())[-self.LIMIT :])
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(entries))
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self._forget_old_versions()

    def _forget_old_versions(self) -> None:
        """Remove the memos of other versions of this module unused for ``STALE_DAYS``."""
        if self.path is None:
            return
        cutoff = time.time() - self.STALE_DAYS * 86_400
        for other in self.path.parent.glob("code-analysis-py*.json"):
            with contextlib.suppress(OSError):
                if other != self.path and other.stat().st_mtime < cutoff:
                    other.unlink()


_ANALYSES = _AnalysisMemo()


@functools.lru_cache(maxsize=4096)
def _parse_text(text: str) -> tuple[ast.AST | None, str]:
    """Parsed once per process per source text (every stage reaches the same helpers)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        try:
            tree = ast.parse(f"(\n{text.strip().rstrip(',')}\n)")
        except SyntaxError:
            return None, _sha(_without_comments(text))
    _strip_docstrings(tree)
    return tree, _sha(ast.dump(tree, include_attributes=False))


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]


def _without_comments(text: str) -> str:
    try:
        tokens = tokenize.generate_tokens(StringIO(text).readline)
        return " ".join(
            t.string
            for t in tokens
            if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT)
        )
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return text


def _names(tree: ast.AST) -> Iterable[tuple[str, ...]]:
    """Every name ``tree`` uses: ``(name,)`` for a bare name, ``(name, attr, ...)`` for an
    attribute chain (its first name comes again on its own)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain is not None:
                yield tuple(chain)
        elif isinstance(node, ast.Name):
            yield (node.id,)


def _resolve(
    names: Iterable[tuple[str, ...]], namespace: dict[str, Any]
) -> Iterable[tuple[str, Any]]:
    """(dotted name, value) of each of ``names`` that ``namespace`` holds: a global, or a
    module attribute chain followed as far as it goes through modules."""
    for chain in names:
        if len(chain) == 1:
            if chain[0] in namespace:
                yield chain[0], namespace[chain[0]]
            continue
        value = namespace.get(chain[0])
        for attr in chain[1:]:
            if not isinstance(value, types.ModuleType):
                break
            value = getattr(value, attr, None)
        if value is not None:
            yield ".".join(chain), value


def _chain(node: ast.Attribute) -> list[str] | None:
    parts: list[str] = []
    current: ast.AST = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    return [current.id, *reversed(parts)]


# ---------------------------------------------------------------------------------- manifest
@dataclass
class Manifest:
    """Everything a stage's result depends on; its hash is the cache key."""

    stage: str
    code: dict[str, str]
    config: dict[str, str]
    files: dict[str, str]
    inputs: dict[str, str | None]
    schemas: dict[str, str]
    packages: dict[str, str]
    format: int = CACHE_FORMAT

    @property
    def key(self) -> str:
        return _sha(json.dumps(asdict(self), sort_keys=True))

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "key": self.key}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data.pop("key", None)
        return cls(**data)


_file_digests: dict[tuple, str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the whole file); a marker when it is not a readable file.

    Remembered in this process while the file's size, mtime, inode and change time stay the
    same, so the stages that name one file hash it once.
    """
    path = Path(path)
    try:
        info = path.stat()
        memo_key = (
            str(path.resolve()),
            info.st_size,
            info.st_mtime_ns,
            info.st_ino,
            info.st_ctime_ns,
        )
        if memo_key not in _file_digests:
            with path.open("rb") as fh:
                _file_digests[memo_key] = hashlib.file_digest(fh, "sha256").hexdigest()
        return _file_digests[memo_key]
    except FileNotFoundError:
        return f"missing: {path.resolve()}"
    except (IsADirectoryError, PermissionError) as exc:
        return f"unreadable: {path.resolve()} ({type(exc).__name__})"


def build_manifest(stage: Stage, cfg: DictConfig, inputs: dict[str, str | None]) -> Manifest:
    """The manifest of running ``stage`` with ``cfg`` on inputs with these digests."""
    # Secrets are not part of the key (a new password computes nothing new) nor of the manifest.
    config = flatten(redacted(config_slice(cfg, stage.config_keys)))
    for ignored in stage.ignore_keys:  # a key, or a group of keys
        for key in [k for k in config if k == ignored or k.startswith(ignored + ".")]:
            del config[key]
    files = {}
    for key in stage.file_keys:
        value = OmegaConf.select(cfg, key)
        config.pop(key, None)  # the content counts, not where the file is
        if value:
            files[key] = file_digest(value)
    schemas = {
        d.name: _schema_digest(d.schema) for d in (*stage.inputs, *stage.outputs) if d.schema
    }
    return Manifest(
        stage=stage.name,
        code=code_hashes([stage.func, stage.gate, *config_code(cfg, stage.config_keys)]),
        config=config,
        files=files,
        inputs=dict(sorted(inputs.items())),
        schemas=schemas,
        packages=package_versions((*BASE_PACKAGES, *stage.packages)),
    )


def config_code(cfg: DictConfig, keys: Iterable[str]) -> list[Any]:
    """The classes and functions the ``keys`` of ``cfg`` name by dotted path (``_target_``,
    ``model.estimator``) that are code of this package or of the project, not of an installed
    package (whose version is in the key instead): a project's feature transformer, say.
    A path that does not import is left out; the stage reports it when it runs."""
    from hydra.utils import get_object

    found = []
    for path in dotted_paths(config_slice(cfg, list(keys))):
        try:
            obj = get_object(path)
        except Exception:  # ImportError, AttributeError, Hydra's own: the stage says why
            continue
        if _top_package(obj) == PACKAGE_ROOT or not _installed(obj):
            found.append(obj)
    return found


def _installed(obj: Any) -> bool:
    """Whether ``obj`` comes from the standard library or an installed package (a file under
    a ``site-packages`` or ``dist-packages`` directory, wherever that is on ``sys.path``), or
    has no source file."""
    path = getattr(sys.modules.get(getattr(obj, "__module__", "") or ""), "__file__", None)
    if not path:
        return True
    real = Path(os.path.realpath(path))
    if {"site-packages", "dist-packages"} & set(real.parts[:-1]):
        return True
    return any(real.is_relative_to(root) for root in _standard_library())


@functools.cache
def _standard_library() -> tuple[Path, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple({Path(os.path.realpath(paths[k])) for k in ("stdlib", "platstdlib") if k in paths})


def _schema_digest(schema: Any) -> str:
    """A frame schema's part of the key: the code of its function or DataFrameModel, or the
    content of its YAML file (a declared schema keeps what it names in ``source``)."""
    source = getattr(schema, "source", schema)
    if isinstance(source, Path):
        return file_digest(source)
    if not callable(source):  # a DataFrameSchema object
        return _sha(repr(source))
    return _sha(json.dumps(code_hashes([source]), sort_keys=True))


# ---------------------------------------------------------------------------------- decision
@dataclass
class CacheDecision:
    """What the runner does with a stage: reuse ``source_run_id`` (a hit) or run it."""

    stage: str
    status: str  # hit | miss | recompute | off | uncacheable | pending
    manifest: Manifest | None
    reasons: list[str] = field(default_factory=list)
    source_run_id: str | None = None

    @property
    def hit(self) -> bool:
        return self.status == "hit"

    @property
    def key(self) -> str | None:
        return self.manifest.key if self.manifest else None

    @property
    def storable(self) -> bool:
        """May this run's outputs be reused later (once complete)?"""
        return self.status in ("miss", "recompute")

    def describe(self) -> str:
        if self.hit:
            return f"stage {self.stage}: cache hit, reusing run {self.source_run_id}"
        what = {"pending": "will run", "uncacheable": "not cacheable"}.get(
            self.status, f"cache {self.status}"
        )
        return f"stage {self.stage}: {what}: " + "; ".join(self.reasons)


def policy_of(cfg: DictConfig, stage_name: str) -> str:
    """The cache policy of a stage (config.CACHE_POLICIES): ``cache.stages.<name>``, else
    ``cache.policy``."""
    cache = cfg.get("cache")
    if cache is None:
        return "use"
    return (cache.get("stages") or {}).get(stage_name) or cache.get("policy") or "use"


def decide(
    stage: Stage,
    cfg: DictConfig,
    client: MlflowClient,
    experiment_id: str,
    inputs: dict[str, str | None],
    *,
    pending: Iterable[str] = (),
    label: Callable[[str], str] = str,
) -> CacheDecision:
    """Hit or miss, and why. ``inputs``: digest of each input (None when unknown); ``pending``:
    inputs whose producing stage runs first in this pipeline (their digests are not known yet);
    ``label``: how a miss reason names an input (``split/train``).
    """
    policy = policy_of(cfg, stage.name)
    unset = [k for k in stage.seed_keys if _present(cfg, k) and OmegaConf.select(cfg, k) is None]
    manifest = None if pending else build_manifest(stage, cfg, inputs)
    if unset:
        reason = f"{', '.join(unset)} is unset (seed: null), so every run gives a different result"
        return CacheDecision(stage.name, "uncacheable", manifest, [reason])
    if policy == "off":
        return CacheDecision(
            stage.name, "off", manifest, ["cache policy 'off': runs, never reused"]
        )
    if policy == "recompute":
        return CacheDecision(stage.name, "recompute", manifest, ["cache policy 'recompute'"])
    if pending:
        waits = f"input(s) {', '.join(sorted(pending))} are recomputed first"
        known = _known_changes(stage, cfg, client, experiment_id, inputs, label)
        if known:  # what differs from the last run already (a hit needs an older match)
            older = f"{waits}; a hit only if an earlier run had these settings and inputs"
            return CacheDecision(stage.name, "pending", None, [*known, older])
        return CacheDecision(
            stage.name, "pending", None, [f"{waits}; a hit only if they come out unchanged"]
        )
    unknown = sorted(name for name, digest in inputs.items() if digest is None)
    if unknown:
        return CacheDecision(
            stage.name, "miss", manifest, [f"no recorded digest for input(s) {', '.join(unknown)}"]
        )
    source = find_stored(
        client, experiment_id, stage.name, manifest.key, after=stage.context is not None
    )
    if source is not None:
        return CacheDecision(stage.name, "hit", manifest, source_run_id=source.info.run_id)
    unfinished = _unfinished(client, experiment_id, stage.name, manifest.key)
    if unfinished is not None:
        reason = (
            f"the earlier run with this key ({unfinished.info.run_id}) did not complete "
            f"({unfinished.info.status}); running it again"
        )
        return CacheDecision(stage.name, "miss", manifest, [reason])
    if stage.context is not None:
        # Data that comes back after the champion moved: said as "champion v1 -> v2" against
        # the run on the same data, not as the data changing since the newest run.
        previous = closest_manifest(client, experiment_id, stage.name, manifest)
    else:
        previous = previous_manifest(client, experiment_id, stage.name)
    if previous is None:
        attempt = last_attempt(client, experiment_id, stage.name)
        if attempt is not None:  # it never completed: say so, and what differs from it
            run, tried = attempt
            reasons = explain(tried, manifest, label)
            head = f"no earlier finished run; the last one ({run.info.run_id}) {run.info.status}"
            return CacheDecision(stage.name, "miss", manifest, [head, *reasons])
    return CacheDecision(stage.name, "miss", manifest, explain(previous, manifest, label))


def _known_changes(
    stage: Stage,
    cfg: DictConfig,
    client: MlflowClient,
    experiment_id: str,
    inputs: dict[str, str | None],
    label: Callable[[str], str],
) -> list[str]:
    """For a stage whose inputs are not computed yet: how its config, files, code, packages and
    the ``inputs`` known now (contexts) differ from its last computed run ([]: none)."""
    previous = previous_manifest(client, experiment_id, stage.name)
    if previous is None:
        return []
    then = replace(previous, inputs={k: v for k, v in previous.inputs.items() if k in inputs})
    now = build_manifest(stage, cfg, inputs)
    return explain(then, now, label) if then.key != now.key else []


def _present(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def find_stored(
    client: MlflowClient, experiment_id: str, stage: str, key: str, *, after: bool = False
) -> Run | None:
    """The newest complete, reusable FINISHED run of ``stage`` with cache key ``key``; with
    ``after`` (a stage with contexts), else the newest that left its contexts so (``KEY_AFTER``):
    a register run that made v1 champion is reused while v1 is champion, not while v2 is."""
    reusable = (
        f"tags.`{Cache.STORED}` = 'true' and tags.`{Runs.STAGE}` = '{stage}' "
        "and attributes.status = 'FINISHED'"
    )
    found = _newest(client, experiment_id, f"tags.`{Cache.KEY}` = '{key}' and {reusable}")
    if found is None and after:
        found = _newest(client, experiment_id, f"tags.`{Cache.KEY_AFTER}` = '{key}' and {reusable}")
    return found


def _unfinished(client: MlflowClient, experiment_id: str, stage: str, key: str) -> Run | None:
    """The newest run of ``stage`` with this key that did not complete (failed, killed)."""
    return _newest(
        client,
        experiment_id,
        f"tags.`{Cache.KEY}` = '{key}' and tags.`{Runs.STAGE}` = '{stage}' "
        "and attributes.status != 'FINISHED'",
    )


def _newest(client: MlflowClient, experiment_id: str, query: str) -> Run | None:
    runs = client.search_runs(
        [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def previous_manifest(client: MlflowClient, experiment_id: str, stage: str) -> Manifest | None:
    """The manifest of the newest FINISHED computed (not hit) run of ``stage``, with its
    contexts as the run left them (a register run that made v1 champion: champion v1)."""
    return next(_computed_manifests(client, experiment_id, stage), None)


# How many of a stage's newest computed runs ``closest_manifest`` compares.
CLOSEST_LOOKBACK = 5


def closest_manifest(
    client: MlflowClient, experiment_id: str, stage: str, current: Manifest
) -> Manifest | None:
    """Of the manifests of the stage's CLOSEST_LOOKBACK newest computed runs, the one that
    differs from ``current`` in the fewest entries (the newest of those)."""
    manifests = _computed_manifests(client, experiment_id, stage)
    return min(manifests, key=lambda m: _distance(m, current), default=None)


def _distance(a: Manifest, b: Manifest) -> int:
    """How many entries of two manifests differ (config keys, files, inputs, code, ...)."""
    if a.format != b.format:
        return sys.maxsize
    parts = ("config", "files", "inputs", "code", "schemas", "packages")
    return sum(len(_changed(getattr(a, part), getattr(b, part))) for part in parts)


def _computed_manifests(client: MlflowClient, experiment_id: str, stage: str) -> Iterator[Manifest]:
    """The manifests of the CLOSEST_LOOKBACK newest FINISHED computed runs of ``stage``, newest
    first, each with its contexts as the run left them; runs without one are skipped."""
    from mlflow_pipeline.store import artifacts

    runs = client.search_runs(
        [experiment_id],
        f"tags.`{Runs.STAGE}` = '{stage}' and tags.`{Cache.STATUS}` != 'hit' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=CLOSEST_LOOKBACK,
    )
    for run in runs:
        name = MANIFEST_AFTER if Cache.KEY_AFTER in run.data.tags else MANIFEST
        try:
            yield Manifest.from_json(artifacts.load_text(run.info.run_id, name))
        except Exception:  # an older run without a manifest: try the one before
            continue


def last_attempt(
    client: MlflowClient, experiment_id: str, stage: str
) -> tuple[Run, Manifest] | None:
    """The newest computed run of ``stage`` that did not finish (FAILED, KILLED), with its
    manifest: what a miss is explained against when no run of the stage ever finished."""
    from mlflow_pipeline.store import artifacts

    runs = client.search_runs(
        [experiment_id],
        f"tags.`{Runs.STAGE}` = '{stage}' and tags.`{Cache.STATUS}` != 'hit' "
        "and attributes.status != 'FINISHED' and attributes.status != 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    for run in runs:
        try:
            return run, Manifest.from_json(artifacts.load_text(run.info.run_id, MANIFEST))
        except Exception:  # stopped before its manifest was logged
            return None
    return None


def explain(
    previous: Manifest | None, current: Manifest, label: Callable[[str], str] = str
) -> list[str]:
    """Why ``current`` misses, compared with the stage's previous manifest, in words."""
    if previous is None:
        return ["no earlier run"]
    if previous.format != current.format:
        return [f"cache format changed: {previous.format} -> {current.format}"]
    reasons: list[str] = []
    changed = _without_emptied_parents(_changed(previous.config, current.config))
    if changed:
        reasons.append("config changed: " + ", ".join(f"{k} {a} -> {b}" for k, a, b in changed))
    for key, before, after in _changed(previous.files, current.files):
        reasons.append(f"file changed: {key} digest {_short(before)} -> {_short(after)}")
    for name, before, after in _changed(previous.inputs, current.inputs):
        if _is_digest(before) or _is_digest(after):
            reasons.append(
                f"input changed: {label(name)} digest {_short(before)} -> {_short(after)}"
            )
        else:  # a context's key (``breast_cancer v1 profile <digest>``): said as it reads
            reasons.append(f"input changed: {label(name)}: {_shorten(before)} -> {_shorten(after)}")
    code = _changed(previous.code, current.code)
    if code:
        files: dict[str, list[str]] = {}
        for ident, _, _ in code:
            path, _, name = ident.partition(":")
            files.setdefault(path, []).append(name)
        reasons.append(
            "code changed: "
            + ", ".join(f"{path} ({', '.join(names)})" for path, names in files.items())
        )
    for name, _, _ in _changed(previous.schemas, current.schemas):
        reasons.append(f"schema changed: {name}")
    changed = _changed(previous.packages, current.packages)
    if changed:
        reasons.append("packages changed: " + ", ".join(f"{k} {a} -> {b}" for k, a, b in changed))
    return reasons or ["the earlier run with this key is not reusable (failed or not stored)"]


def _changed(before: dict, after: dict) -> list[tuple[str, Any, Any]]:
    keys = sorted(set(before) | set(after))
    return [
        (k, before.get(k, "<absent>"), after.get(k, "<absent>"))
        for k in keys
        if before.get(k) != after.get(k)
    ]


# How an empty mapping or list, or a key not there, reads in a manifest's flattened config
# (``config.flatten``: every value a string).
_EMPTY = ("{}", "[]", "<absent>")


def _without_emptied_parents(changed: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """``changed`` without a key that went from empty to absent (or back) because keys under
    it appeared (or went): ``data.columns {} -> <absent>`` says nothing beside
    ``data.columns.Name.role <absent> -> text``."""
    keys = [k for k, _, _ in changed]
    return [
        (k, a, b)
        for k, a, b in changed
        if not (a in _EMPTY and b in _EMPTY and any(other.startswith(k + ".") for other in keys))
    ]


def _short(digest: Any) -> str:
    text = str(digest)
    return text[:12] if len(text) == 64 else text


_DIGEST = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _shorten(text: Any) -> str:
    """``text`` with each sha256 digest in it cut to its first 12 characters; nothing: none."""
    return "none" if text is None else _DIGEST.sub(r"\1", str(text))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def input_digests(
    stage: Stage, runs: dict[str, str], known: dict[str, str | None], tags_of: Callable
) -> dict[str, str | None]:
    """Digest of each input of ``stage``: ``known`` (in memory), else the producing run's
    ``pipeline.digest.output.<name>`` tag (``tags_of(run_id)``)."""
    digests: dict[str, str | None] = {}
    for dataset in (*stage.inputs, *stage.schema_inputs):
        digest = known.get(dataset.name)
        if digest is None and dataset.name in runs:
            digest = tags_of(runs[dataset.name]).get(Runs.DIGEST_OUTPUT + dataset.name)
        digests[dataset.name] = digest
    return digests
