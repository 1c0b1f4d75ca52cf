"""Sweep helpers on their own: warming the joblib launcher's workers (real loky processes)."""

from __future__ import annotations

import os

from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
from joblib import Parallel, delayed
from omegaconf import OmegaConf

from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine.sweep import WARM_MODULES, warm_joblib_workers, warm_modules

# conf/hydra/launcher/parallel.yaml as Hydra composes it (hydra_joblib_launcher's defaults).
JOBLIB = {
    "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "n_jobs": 2,
    "backend": None,
    "prefer": "processes",
    "require": None,
    "verbose": 0,
    "timeout": None,
    "pre_dispatch": "2*n_jobs",
    "batch_size": "auto",
    "temp_folder": None,
    "max_nbytes": None,
    "mmap_mode": "r",
}


def test_warm_modules_are_the_stages_targets_and_the_jobs_imports():
    modules = warm_modules(load_config(["model=random_forest", "features=standard"]))
    assert modules[: len(WARM_MODULES)] == list(WARM_MODULES)
    assert {"mlflow_pipeline.stages.train", "mlflow_pipeline.stages.evaluate"} <= set(modules)
    assert {"sklearn.ensemble", "sklearn.preprocessing", "sklearn.impute"} <= set(modules)


def test_the_launchers_parallel_reuses_the_warmed_workers():
    warming = warm_joblib_workers(OmegaConf.create(JOBLIB), ["json", "no_such_module"])
    assert warming is not None
    warmed = set(warming.join())
    assert warmed
    assert os.getpid() not in warmed
    # What hydra_joblib_launcher._core.launch then does with the same launcher config.
    joblib_cfg = {k: v for k, v in JOBLIB.items() if k != "_target_"}
    joblib_cfg["backend"] = "loky"
    process_joblib_cfg(joblib_cfg)
    ran = set(Parallel(**joblib_cfg)(delayed(os.getpid)() for _ in range(8)))
    assert ran <= warmed  # the warm workers, not new ones


def test_other_launchers_are_not_warmed():
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert warm_joblib_workers(OmegaConf.create(basic), ["json"]) is None
