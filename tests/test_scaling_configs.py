"""The configs for running sweeps and pipelines beyond this machine fit what reads them: the Ray
launcher (composed and resolved as the launcher does), the SLURM launcher (composed when
hydra-submitit-launcher is installed, else checked against its schema's keys), and the MLflow
Projects Kubernetes backend (read by MLflow's own parser, rendered by its own Job builder)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects.docker import validate_docker_env
from mlflow.projects.utils import get_entry_point_command, load_project
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.cli.project import split_options
from mlflow_pipeline.config import CONF_DIR, PACKAGE_CONF, PROJECT_ROOT

LAUNCHERS = PACKAGE_CONF / "hydra" / "launcher"
K8S = PROJECT_ROOT / "projects" / "k8s"
# SlurmQueueConf of hydra-submitit-launcher 1.2.0 (with BaseQueueConf): the keys a launcher
# config may set. The plugin is not a dependency; when it is installed, the config is composed.
SLURM_KEYS = {
    "_target_", "submitit_folder", "timeout_min", "cpus_per_task", "gpus_per_node",
    "tasks_per_node", "mem_gb", "nodes", "name", "stderr_to_stdout", "partition", "qos",
    "comment", "constraint", "exclude", "gres", "cpus_per_gpu", "gpus_per_task", "mem_per_gpu",
    "mem_per_cpu", "account", "signal_delay_s", "max_num_timeout", "additional_parameters",
    "array_parallelism", "setup",
}  # fmt: skip
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# What MLflow's Kubernetes backend replaces in the Job template (MLflow docs, Projects).
K8S_PLACEHOLDERS = {
    "name": "{replaced with MLflow Project name}",
    "image": "{replaced with URI of Docker image created during Project execution}",
    "command": ["{replaced with MLflow Project entry point command}"],
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def hydra_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text("utf-8"))


# ---- Ray ------------------------------------------------------------------------------------


def test_ray_launcher_joins_the_given_cluster_and_passes_the_run_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = hydra_config(
        "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=10.0.0.5:6379"
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    # What the sweep callback has set by the time the launcher resolves its config.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    init = OmegaConf.to_container(launcher.ray.init, resolve=True)
    assert init == {
        "address": "10.0.0.5:6379",
        # None, so the plugin does not add its own value, which ray.init refuses for a cluster.
        "object_store_memory": None,
        "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": "http://tracking:5000"}},
    }
    assert OmegaConf.to_container(launcher.ray.remote) == {"num_cpus": 1}
    assert type(instantiate(launcher)).__name__ == "RayLauncher"


@pytest.mark.parametrize(("ray_address", "expected"), [(None, "auto"), ("10.0.0.5:6379", None)])
def test_ray_launcher_address_defaults_to_ray_address_then_auto(
    monkeypatch: pytest.MonkeyPatch, ray_address: str | None, expected: str | None
) -> None:
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    init = OmegaConf.to_container(
        hydra_config("hydra/launcher=ray_cluster").hydra.launcher.ray.init, resolve=True
    )
    assert init["address"] == (expected or ray_address)
    assert init["runtime_env"]["env_vars"] == {"MLFLOW_TRACKING_URI": ""}


# ---- SLURM ----------------------------------------------------------------------------------


def test_slurm_launcher_sets_known_keys_with_sensible_values() -> None:
    raw = read_yaml(LAUNCHERS / "slurm.yaml")
    assert raw["defaults"] == ["submitit_slurm"]
    keys = set(raw) - {"defaults"}
    assert keys <= SLURM_KEYS, keys - SLURM_KEYS
    assert raw["_target_"] == SLURM_TARGET
    assert raw["partition"] is None or isinstance(raw["partition"], str)
    for key in ("timeout_min", "cpus_per_task", "mem_gb", "array_parallelism"):
        assert isinstance(raw[key], int), key
        assert raw[key] > 0, key
    # The jobs nest under the sweep run and log to its store only with the CLI's environment.
    assert raw["additional_parameters"]["export"] == "ALL"


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher is not installed (not a dependency)",
)
def test_slurm_launcher_composes_with_the_plugin() -> None:
    cfg = hydra_config("hydra/launcher=slurm", "hydra.launcher.partition=cpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_TARGET
    assert launcher.partition == "cpu"
    assert launcher.array_parallelism == read_yaml(LAUNCHERS / "slurm.yaml")["array_parallelism"]


# ---- Kubernetes (MLflow Projects backend) ---------------------------------------------------


def test_kubernetes_backend_config_is_what_mlflow_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.loads((K8S / "kubernetes_config.json").read_text("utf-8"))
    assert set(config) == {"kube-context", "repository-uri", "kube-job-template-path"}
    # The template path is relative to where `mlflow run` runs: the repo root.
    monkeypatch.chdir(PROJECT_ROOT)
    parsed = _parse_kubernetes_config(config)
    assert parsed["kube-job-template"] == read_yaml(K8S / "kubernetes_job_template.yaml")


def test_kubernetes_job_template_has_the_fields_mlflow_replaces() -> None:
    job = read_yaml(K8S / "kubernetes_job_template.yaml")
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == K8S_PLACEHOLDERS["name"]
    assert job["metadata"]["namespace"]  # MLflow submits to this namespace; it has no default
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert {k: container[k] for k in K8S_PLACEHOLDERS} == K8S_PLACEHOLDERS
    # MLflow appends its variables to this list: entries must already be name/value pairs.
    assert all(set(entry) == {"name", "value"} for entry in container.get("env", []))


def test_kubernetes_project_is_the_main_entry_point_in_a_docker_env() -> None:
    project = load_project(str(K8S))
    validate_docker_env(project)  # the Kubernetes backend runs docker_env projects only
    assert DNS_LABEL.match(project.name), "Job and container names derive from it"
    here, repo = project.get_entry_point("main"), load_project(str(PROJECT_ROOT))
    assert here.command == repo.get_entry_point("main").command
    assert set(here.parameters) == set(repo.get_entry_point("main").parameters)


def test_kubernetes_image_builds_from_files_in_the_repo() -> None:
    dockerfile = (K8S / "Dockerfile").read_text("utf-8")
    assert re.search(r"^FROM python:3\.11\b", dockerfile, re.M)
    sources = [
        word
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for word in shlex.split(line)[1:-1]
    ]
    assert sources
    assert all((PROJECT_ROOT / s).exists() for s in sources), sources
    ignore = (K8S / "Dockerfile.dockerignore").read_text("utf-8")
    assert all(f"!{s}" in ignore.split() for s in sources), "the build context keeps them"
    assert "-e ." in dockerfile  # editable: the package finds conf/ beside it


@pytest.fixture
def mlflow_kubernetes() -> Iterator[types.ModuleType]:
    """MLflow's Kubernetes backend module. The `kubernetes` client (not a dependency) is stubbed
    when missing: building the Job definition uses none of it."""
    stubbed = importlib.util.find_spec("kubernetes") is None
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "kubernetes"}
    if stubbed:
        config_exception = types.ModuleType("kubernetes.config.config_exception")
        config_exception.ConfigException = type("ConfigException", (Exception,), {})
        config = types.ModuleType("kubernetes.config")
        config.config_exception = config_exception
        client = types.ModuleType("kubernetes")
        client.config = config
        sys.modules.update(
            {
                "kubernetes": client,
                "kubernetes.config": config,
                "kubernetes.config.config_exception": config_exception,
            }
        )
    try:
        yield importlib.import_module("mlflow.projects.kubernetes")
    finally:
        if stubbed:  # nothing imported against the stub outlives the test
            for name in [n for n in sys.modules if n.split(".")[0] == "kubernetes"]:
                del sys.modules[name]
            sys.modules.update(saved)
            sys.modules.pop("mlflow.projects.kubernetes", None)
            mlflow_projects = sys.modules["mlflow.projects"]
            if hasattr(mlflow_projects, "kubernetes"):
                delattr(mlflow_projects, "kubernetes")


def rendered_job(kb: types.ModuleType, hydra_options: str) -> dict:
    """The Job MLflow would submit for ``-P hydra_options=...``."""
    project = load_project(str(K8S))
    template = read_yaml(K8S / "kubernetes_job_template.yaml")
    command = get_entry_point_command(project, "main", {"hydra_options": hydra_options}, None)
    env = {"MLFLOW_RUN_ID": "0" * 32, "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    return kb._get_kubernetes_job_definition(
        project.name,
        "registry.example/mlflow-pipeline:1234567",
        "sha256:" + "0" * 64,
        kb._get_run_command(command),
        {**env, "MLFLOW_EXPERIMENT_ID": "1"},
        template,
    )


def test_kubernetes_job_mlflow_renders_is_a_valid_job(mlflow_kubernetes) -> None:
    job = rendered_job(mlflow_kubernetes, "model=random_forest")
    name = job["metadata"]["name"]
    assert len(name) <= 63, name  # pods get it as a label
    assert DNS_LABEL.match(name), name
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert DNS_LABEL.match(container["name"])
    assert container["image"].endswith("@sha256:" + "0" * 64)
    assert container["command"][:4] == ["python", "-m", "mlflow_pipeline.cli", "main"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert {"MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"} <= set(env)
    hydra_options = container["command"][container["command"].index("--hydra-options") + 1]
    assert split_options(hydra_options) == ["model=random_forest"]


def test_kubernetes_job_passes_several_overrides(mlflow_kubernetes) -> None:
    """MLflow's Kubernetes backend shell-quotes each word of the command but runs it without a
    shell; the CLI unwraps one fully quoted word."""
    job = rendered_job(mlflow_kubernetes, "-m model.C=0.1,1.0")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    hydra_options = command[command.index("--hydra-options") + 1]
    assert split_options(hydra_options, sweep_allowed=True) == ["-m", "model.C=0.1,1.0"]
