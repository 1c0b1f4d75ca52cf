"""Lineage of a result: every stage run it came from, their data digests, the resolved config,
the code version and the package versions, collected from the tracking store.

``register`` writes it as ``lineage.json`` on its run, and tags the model version it registers
with where that is (``lineage.artifact``) and the few stage runs code reads from the version
(registry.model_registry.lineage_tags); ``reproduce`` reads the artifact back.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.config import resolved_yaml
from mlflow_pipeline.redaction import redacted
from mlflow_pipeline.store.tracking import code_version
from mlflow_pipeline.tags import Cache, Runs

ARTIFACT = "lineage.json"
PACKAGES = ("numpy", "pandas", "pyarrow", "pandera", "scikit-learn", "scipy", "skops", "mlflow")


def collect(
    client: MlflowClient,
    input_runs: dict[str, str],
    cfg: DictConfig,
    *,
    pipeline_run_id: str | None,
    record_run_id: str,
    stage_runs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The lineage of a stage whose inputs come from ``input_runs`` (dataset -> run id),
    following each run's ``pipeline.upstream.*`` tags back to ingest.

    ``record_run_id`` is the run that logs it; ``stage_runs`` the stage runs of this pipeline
    run (a cache hit's run differs from the run that computed its outputs).
    """
    stages: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    frontier = list(dict.fromkeys(input_runs.values()))
    seen: set[str] = set()
    while frontier:
        run_id = frontier.pop(0)
        if run_id in seen:
            continue
        seen.add(run_id)
        tags = client.get_run(run_id).data.tags
        stage = tags.get(Runs.STAGE, run_id)
        outputs = {
            k[len(Runs.DIGEST_OUTPUT) :]: v
            for k, v in tags.items()
            if k.startswith(Runs.DIGEST_OUTPUT)
        }
        digests.update(outputs)
        stages[stage] = {
            "run_id": run_id,
            "pipeline_stage_run_id": (stage_runs or {}).get(stage, run_id),
            "cache_key": tags.get(Cache.KEY),
            "outputs": outputs,
            "inputs_from": {
                k[len(Runs.UPSTREAM_PREFIX) :]: v
                for k, v in tags.items()
                if k.startswith(Runs.UPSTREAM_PREFIX)
            },
        }
        frontier += [v for k, v in tags.items() if k.startswith(Runs.UPSTREAM_PREFIX)]
    config = resolved_yaml(redacted(cfg))  # secrets never leave memory
    version = code_version()
    return {
        "pipeline_run_id": pipeline_run_id,
        "record_run_id": record_run_id,
        "stages": dict(sorted(stages.items())),
        "data_digests": dict(sorted(digests.items())),
        "config": config,
        "config_digest": hashlib.sha256(config.encode("utf-8")).hexdigest(),
        "code_version": {
            "commit": version.get(Runs.GIT_COMMIT),
            "dirty": version.get(Runs.GIT_DIRTY) == "true" if version else None,
        },
        "packages": package_versions(PACKAGES),
    }


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """``name -> installed version`` (and the Python version)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return dict(sorted(versions.items()))
