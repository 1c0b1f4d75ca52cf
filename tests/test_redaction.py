"""Secrets are redacted before anything is written: keys named like secrets, URI passwords,
secret query parameters, overrides, free text and log records."""

from __future__ import annotations

import logging

import pytest

from mlflow_pipeline.config import flatten, load_config, resolved_yaml
from mlflow_pipeline.redaction import (
    REDACTED,
    RedactingFilter,
    is_redacted,
    is_secret_key,
    redact_file,
    redact_overrides,
    redact_records_of,
    redact_text,
    redact_url,
    redacted,
    restore_redacted,
    secrets_of,
)

WEBHOOK = "https://hooks.example.com/services/T000/B000/abcdefghijklmnop?token=tok-123456"
SECRET_OVERRIDES = [
    f"alerts.webhook='{WEBHOOK}'",
    "+data.api_token=key-987654",
    "tracking.uri=postgresql://mlflow:pa55word@db.example.com:5432/mlflow",
]


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("data.api_token", True),
        ("accessKey", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("alerts.webhook", True),
        ("client_credentials", True),
        ("tracking.uri", False),
        ("registry.model_name", False),
        ("validation.drift.ks_pvalue", False),
        ("monkey", False),
        ("tokenizer", False),
    ],
)
def test_secret_keys_are_recognised_by_their_words(key: str, secret: bool):
    assert is_secret_key(key) is secret


def test_no_key_of_the_default_config_is_mistaken_for_a_secret():
    assert [k for k in flatten(load_config([])) if is_secret_key(k)] == ["alerts.webhook"]


def test_uri_passwords_and_secret_query_values_are_redacted():
    assert redact_url("postgresql://u:p4ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("http://h/x?a=1&api_key=zz&b=2") == "http://h/x?a=1&api_key=***&b=2"
    assert redact_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_url("http://user@h/") == "http://user@h/"  # no password
    # An unencoded @ in the password (p@ss): none of it is left.
    assert redact_url("postgresql://u:p@ss@db/x") == "postgresql://u:***@db/x"


def test_a_redacted_config_writes_no_secret_and_keeps_everything_else():
    cfg = load_config(SECRET_OVERRIDES)
    flat = flatten(redacted(cfg))
    assert flat["data.api_token"] == REDACTED
    assert flat["alerts.webhook"] == f"https://hooks.example.com/{REDACTED}"
    assert flat["tracking.uri"] == "postgresql://mlflow:***@db.example.com:5432/mlflow"
    text = resolved_yaml(redacted(cfg))
    for secret in ("key-987654", "pa55word", "tok-123456", "abcdefghijklmnop"):
        assert secret not in text
        assert secret not in str(flat)
    assert cfg.data.api_token == "key-987654"  # the config itself keeps them
    # Without secrets, nothing changes: params, config.yaml and cache keys stay what they were.
    plain = load_config([])
    assert flatten(redacted(plain)) == flatten(plain)
    assert resolved_yaml(redacted(plain)) == resolved_yaml(plain)


def test_overrides_are_redacted_and_restored_from_memory():
    written = redact_overrides([*SECRET_OVERRIDES, "model=random_forest"])
    assert written == [
        f"alerts.webhook='https://hooks.example.com/{REDACTED}'",
        f"+data.api_token={REDACTED}",
        "tracking.uri=postgresql://mlflow:***@db.example.com:5432/mlflow",
        "model=random_forest",
    ]
    assert restore_redacted(written, SECRET_OVERRIDES) == [*SECRET_OVERRIDES, "model=random_forest"]
    assert is_redacted(f"https://hooks.example.com/{REDACTED}")
    assert is_redacted(REDACTED)
    assert not is_redacted("https://hooks.example.com/x")


def test_free_text_loses_every_secret_of_the_config():
    secrets = secrets_of(load_config(SECRET_OVERRIDES))
    assert {"key-987654", "pa55word", "tok-123456", WEBHOOK} <= secrets
    text = f"POST {WEBHOOK} failed; key-987654 rejected by postgresql://mlflow:pa55word@db/x"
    clean = redact_text(text, secrets)
    for secret in ("key-987654", "pa55word", "tok-123456", "abcdefghijklmnop"):
        assert secret not in clean
    assert redact_text("the web", {"web"}) == "the web"  # too short to search for
    assert "hook" not in secrets_of(load_config(["alerts.webhook='http://h/hook?token=abcdef'"]))


def test_log_records_and_files_are_redacted(tmp_path):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s at %s", None, None)
    record.args = ("key-987654", "http://u:pw123@h")
    assert RedactingFilter({"key-987654"}).filter(record)
    assert record.getMessage() == "token *** at http://u:***@h"
    source = logging.getLogger("tests.redaction.launcher")
    redact_records_of([source.name], {"key-987654"})
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda r: seen.append(r.getMessage())  # type: ignore[method-assign]
    source.addHandler(handler)  # a handler added later (Hydra reconfigures between jobs)
    source.warning("#0 : +data.api_token=key-987654")
    assert seen == ["#0 : +data.api_token=***"]
    path = tmp_path / "multirun.yaml"
    path.write_text("- +data.api_token=key-987654\n")
    redact_file(path, {"key-987654"})
    assert path.read_text() == "- +data.api_token=***\n"
    redact_file(tmp_path / "missing.yaml", {"x"})  # nothing to do
