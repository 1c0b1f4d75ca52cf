"""Secrets never leave memory: what every writing point (params, tags, config and lineage
artifacts, logs, the console, alerts) passes a config, an override or a message through first.

A secret is the value of a key named like one (password, token, secret, key, credential,
webhook), the password of a URI (``scheme://user:PASSWORD@host``) and the value of a query
parameter named like one (``?token=...``). Each becomes ``***``; a secret URL keeps its scheme
and host (``https://hooks.example.com/***``) so a reader still sees where it pointed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

REDACTED = "***"
# Words that make a key name a secret, matched against the words of the name
# (``api_token`` -> api, token; ``accessKey`` -> access, key).
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "token",
        "secret",
        "key",
        "apikey",
        "credential",
        "credentials",
        "webhook",
        "auth",
    }
)
# Shorter values are not searched for in free text (they would match by accident).
MIN_SECRET_CHARS = 4
MIN_PATH_SECRET_CHARS = 12
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# scheme://user:password@ -> the password; scheme://token@ (no colon) is left alone unless the
# key names a secret.
# The password runs to the last ``@`` before the host: an unencoded ``@`` in it (``p@ss``) is
# still all redacted.
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#'\"]*:)[^\s/'\"]+@")
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[^=&#\s'\"]+)=)(?P<value>[^&#\s'\"]+)")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_secret_key(name: str) -> bool:
    """Is ``name`` (the last part of a dotted key) named like a secret?"""
    last = str(name).rsplit(".", 1)[-1]
    words = {w.lower() for w in _WORD.findall(last)}
    return bool(words & SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` with the password of its user part and secret-named query values as ``***``."""
    text = _URI_PASSWORD.sub(lambda m: m["head"] + REDACTED + "@", url)
    return _QUERY_PARAM.sub(
        lambda m: m["head"] + REDACTED if is_secret_key(m["name"]) else m[0], text
    )


def redact_value(key: str, value: Any) -> Any:
    """``value`` as it may be written under ``key``."""
    if isinstance(value, list | tuple):
        return [redact_value(key, v) for v in value]
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if value is None or isinstance(value, bool):
        return value
    if is_secret_key(key):
        return _secret_url(value) if isinstance(value, str) and _URL.match(value) else REDACTED
    if isinstance(value, str):
        return redact_url(value)
    return value


def _secret_url(url: str) -> str:
    """A URL that is a secret as a whole (a webhook): its scheme and host only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}/{REDACTED}"


def redacted(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """A resolved copy of ``cfg`` with every secret replaced: what ``flatten``,
    ``resolved_yaml`` and ``config_slice`` should see before anything is written."""
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    else:
        container = {k: v.name if isinstance(v, Enum) else v for k, v in cfg.items()}
    return OmegaConf.create({str(k): redact_value(str(k), v) for k, v in container.items()})


def redact_overrides(overrides: Iterable[str]) -> list[str]:
    """Hydra overrides (``[+~]key=value``) with secret values replaced."""
    return [_redact_override(o) for o in overrides]


def _redact_override(override: str) -> str:
    key, sep, value = override.partition("=")
    if not sep:
        return redact_url(override)
    quote = value[0] if value[:1] in ("'", '"') and value[-1:] == value[:1] else ""
    inner = value[1:-1] if quote else value
    return f"{key}={quote}{redact_value(key.lstrip('+~').strip(), inner)}{quote}"


def restore_redacted(overrides: Iterable[str], originals: Iterable[str]) -> list[str]:
    """``overrides`` read back from a run (redacted) with each redacted one replaced by the
    override of ``originals`` (held in memory) that redacts to it."""
    by_redaction = {_redact_override(o): o for o in originals}
    return [by_redaction.get(o, o) for o in overrides]


def secrets_of(cfg: DictConfig | Mapping[str, Any] | None) -> set[str]:
    """The secret strings in ``cfg``: searched for (and replaced) in free text by
    ``redact_text`` (an error message, a log line)."""
    found: set[str] = set()
    if cfg is None:
        return found
    try:
        container = (
            OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        )
    except Exception:  # an interpolation that does not resolve holds no secret we can see
        return found

    def walk(key: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(str(k), v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(key, v)
        elif isinstance(node, str):
            found.update(_secrets_in_value(key, node))
        elif node is not None and not isinstance(node, bool) and is_secret_key(key):
            found.add(str(node))

    walk("", container)
    return {s for s in found if len(s) >= MIN_SECRET_CHARS}


def _secrets_in_value(key: str, value: str) -> set[str]:
    found = {m[0][len(m["head"]) : -1] for m in _URI_PASSWORD.finditer(value)}
    found |= {m["value"] for m in _QUERY_PARAM.finditer(value) if is_secret_key(m["name"])}
    if is_secret_key(key):
        found.add(value)
        if _URL.match(value):
            # A token in the path (chat webhooks); short paths (/hook) are words, not secrets.
            path = urlsplit(value).path.strip("/")
            if len(path) >= MIN_PATH_SECRET_CHARS:
                found.add(path)
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URI passwords, secret query values and each of ``secrets`` replaced."""
    text = redact_url(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    return text


def redact_file(path: Path, secrets: Iterable[str] = ()) -> None:
    """Rewrite the text file ``path`` (if it exists) with ``redact_text`` applied, atomically."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    clean = redact_text(text, secrets)
    if clean != text:
        tmp = path.with_name(f".{path.name}.redacted")
        tmp.write_text(clean, encoding="utf-8")
        os.replace(tmp, path)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (see ``redact_logs``)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler
            return True
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logs(secrets: Iterable[str] = (), loggers: Iterable[str] = ("", "mlflow")) -> None:
    """Redact what every handler of ``loggers`` (root, mlflow) writes: the console and Hydra's
    log file. Calling it again adds ``secrets`` to the filters already there."""
    secrets = set(secrets)
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            existing = [f for f in handler.filters if isinstance(f, RedactingFilter)]
            if existing:
                existing[0].secrets |= secrets
            else:
                handler.addFilter(RedactingFilter(secrets))


def redact_records_of(names: Iterable[str], secrets: Iterable[str] = ()) -> None:
    """Redact every record the loggers ``names`` create, whatever handlers are in place when
    they log (Hydra's launchers reconfigure logging between jobs, replacing the handlers
    ``redact_logs`` filtered)."""
    secrets = set(secrets)
    for name in names:
        logger = logging.getLogger(name)
        existing = [f for f in logger.filters if isinstance(f, RedactingFilter)]
        if existing:
            existing[0].secrets |= secrets
        else:
            logger.addFilter(RedactingFilter(secrets))


def is_redacted(value: Any) -> bool:
    """Was ``value`` (a config value read back from a run) redacted when it was written?"""
    return isinstance(value, str) and (value == REDACTED or value.endswith("/" + REDACTED))
