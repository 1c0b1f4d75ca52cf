"""``mlflow-pipeline --help``: the subcommands and the config groups a user chooses from, and
"did you mean" for a mistyped subcommand."""

from __future__ import annotations

import difflib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mlflow_pipeline.config import CONF_DIR, PACKAGE_CONF

# One line each, in the order a user meets them.
SUBCOMMAND_HELP = {
    "init": "create a project of your own (MLproject, conf/, src/, tests)",
    "example-data": "write the example customer table as a CSV file",
    "schema": "write the data contract inferred from the configured data (pandera YAML)",
    "score": "score a CSV file with a registered version, validated against its contract",
    "serve": "serve a registered version over HTTP, requests checked as score checks files",
    "promote": "move the champion (or another alias) by hand, recorded in the audit trail",
    "audit": "print who moved a model's aliases, when and why",
    "reproduce": "re-run what produced a registered version and compare",
    "simulate": "simulate daily retraining on a CSV file",
    "schedule": "print or install a daily job (cron, systemd, Airflow, Kubernetes)",
    "tracking-uri": "print the tracking store this project's runs go to",
}
# Config groups that are Hydra's or internal, not choices a user makes.
HIDDEN_GROUPS = {"hydra", "schema", "__pycache__"}


def config_groups() -> dict[str, list[str]]:
    """Group -> its options, from the package's defaults and the project's conf/."""
    groups: dict[str, set[str]] = {}
    for conf in (PACKAGE_CONF, CONF_DIR):
        for group in sorted(Path(conf).iterdir()):
            if group.is_dir() and group.name not in HIDDEN_GROUPS:
                groups.setdefault(group.name, set()).update(p.stem for p in group.glob("*.yaml"))
    return {name: sorted(options) for name, options in sorted(groups.items())}


def print_help() -> None:
    console = Console(soft_wrap=True)
    console.print(
        "usage: mlflow-pipeline [--dry-run] [-m] [GROUP=OPTION ...] [KEY=VALUE ...]\n"
        "       mlflow-pipeline SUBCOMMAND [--help] ...\n\n"
        "Runs the pipeline (a Hydra app: -m sweeps over comma lists, --dry-run plans without "
        "running), or a subcommand.\n",
        markup=False,
        highlight=False,
    )
    commands = Table(title="subcommands", title_justify="left", show_header=False, box=None)
    for name, text in SUBCOMMAND_HELP.items():
        commands.add_row(name, text)
    console.print(commands)
    groups = Table(title="\nconfig groups (GROUP=OPTION)", title_justify="left", box=None)
    groups.add_column("group")
    groups.add_column("options")
    for name, options in config_groups().items():
        groups.add_row(name, ", ".join(options))
    console.print(groups)
    console.print(
        "\nexamples: mlflow-pipeline model=random_forest model.n_estimators=200\n"
        "          mlflow-pipeline -m model=logistic_regression,random_forest\n"
        "          mlflow-pipeline data=csv data.path=customers.csv data.target=churned "
        "data.task=classification\n"
        "--cfg job prints the composed config; --hydra-help shows Hydra's own help.",
        markup=False,
        highlight=False,
    )


def unknown_subcommand(word: str, known: list[str]) -> str | None:
    """The error for a first argument that is neither a subcommand nor an override, or None
    when it may be one (it has ``=``, or is a flag)."""
    if word.startswith("-") or "=" in word or word.startswith(("+", "~")):
        return None
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return (
        f"unknown command '{word}'{hint} Run `mlflow-pipeline --help` for the subcommands and "
        "config groups (overrides are KEY=VALUE)."
    )
