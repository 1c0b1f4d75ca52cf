"""Resuming after a crash, through the real CLI: a pipeline SIGKILLed in the middle of any stage
leaves its runs RUNNING; the next run marks them FAILED, reuses the stages that had finished,
computes the rest, and ends with the same model, metrics and registry as a run that never
crashed. An unchanged rerun is all cache hits, and ``--dry-run`` says what a change would run.
"""

from __future__ import annotations

import re
import signal
import subprocess
from dataclasses import dataclass

import pytest
from mlflow.entities import Run

from .helpers import CLASSIFICATION_METRICS, STAGES, Store, assert_ok, tail

pytestmark = pytest.mark.slow

MODEL = "breast_cancer"
# The default data with a model that trains in a fraction of a second.
OVERRIDES = ("model=logistic_regression", "model.max_iter=200")
ENV_FAILPOINT = "MLFLOW_PIPELINE_FAILPOINT"
# What tracking.reap_dead_runs writes on a run whose process is gone.
REAPED = "ended while this run was RUNNING (killed or crashed)"
PLAN_LINE = re.compile(rf"^({'|'.join(STAGES)})\s+(\S+)\s+(.*)$")


def _pipeline(
    store: Store, *args: str, failpoint: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``mlflow-pipeline [args]`` (default: OVERRIDES), killed mid-``failpoint`` if given."""
    with pytest.MonkeyPatch.context() as mp:
        if failpoint:
            mp.setenv(ENV_FAILPOINT, failpoint)
        else:  # never inherited from the shell that runs the tests
            mp.delenv(ENV_FAILPOINT, raising=False)
        return store.pipeline(*(args or OVERRIDES))


def _stage_runs(store: Store, pipeline: Run) -> dict[str, Run]:
    return store.stage_runs(pipeline.info.run_id)


def _cache_keys(stages: dict[str, Run]) -> dict[str, str]:
    """Each run's cache key as the run left its contexts: the clean run's register made v1
    champion (its key_after holds champion v1); a rerun after a kill in register starts with
    v1 champion already, so its key holds v1 and it has no key_after."""
    return {
        name: run.data.tags.get("pipeline.cache.key_after", run.data.tags["pipeline.cache.key"])
        for name, run in stages.items()
    }


def _pick(by_stage: dict, names: list[str]) -> dict:
    return {name: value for name, value in by_stage.items() if name in names}


def _output_digests(stages: dict[str, Run]) -> dict[str, dict[str, str]]:
    # register's outputs name this pipeline's runs (lineage) and its decision: not compared.
    return {
        name: {k: v for k, v in run.data.tags.items() if k.startswith("pipeline.digest.output.")}
        for name, run in stages.items()
        if name != "register"
    }


def _model_metrics(stages: dict[str, Run]) -> dict[str, float]:
    metrics = stages["evaluate"].data.metrics
    assert CLASSIFICATION_METRICS <= set(metrics), sorted(metrics)
    return {k: metrics[k] for k in CLASSIFICATION_METRICS}


def _promotion_record(store: Store, register: Run) -> dict[str, object]:
    """What the registry and the register run say about promoting version 1."""
    tags = store.client.get_model_version(MODEL, "1").tags
    report = store.promotion(register.info.run_id)
    return {
        **{k: v for k, v in tags.items() if k.startswith("promotion.")},
        "report.promote": report["promote"],
        "report.reason": report["reason"],
    }


def _aliases(store: Store) -> dict[str, str | None]:
    return {a: store.alias(MODEL, a) for a in ("champion", "challenger", "rollback")}


def _model_run_id(train: Run) -> str:
    """The run that logged the model of this pipeline's train run (its source, on a hit)."""
    return train.data.tags.get("pipeline.cache.source_run") or train.info.run_id


def _plan(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """``--dry-run`` output: stage -> (status, detail); log lines are ignored."""
    assert_ok(result)
    found = {}
    for line in result.stdout.splitlines():
        match = PLAN_LINE.match(line)
        if match:
            found[match[1]] = (match[2], match[3])
    assert list(found) == list(STAGES), tail(result.stdout)
    return found


@dataclass(frozen=True)
class CleanRun:
    """A pipeline run that never crashed, read back once (its store may get more runs later)."""

    store: Store
    pipeline_run_id: str
    stage_run_ids: dict[str, str]
    cache_keys: dict[str, str]
    output_digests: dict[str, dict[str, str]]
    metrics: dict[str, float]
    promotion: dict[str, object]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    store = Store(tmp_path_factory.mktemp("clean"))
    assert_ok(_pipeline(store))
    [pipeline] = store.runs_of_kind("pipeline")
    assert pipeline.info.status == "FINISHED"
    stages = _stage_runs(store, pipeline)
    assert sorted(stages) == sorted(STAGES)
    assert {r.data.tags["pipeline.cache.status"] for r in stages.values()} == {"miss"}
    assert store.version_numbers(MODEL) == ["1"]
    assert store.alias(MODEL, "champion") == "1"
    return CleanRun(
        store=store,
        pipeline_run_id=pipeline.info.run_id,
        stage_run_ids={name: run.info.run_id for name, run in stages.items()},
        cache_keys=_cache_keys(stages),
        output_digests=_output_digests(stages),
        metrics=_model_metrics(stages),
        promotion=_promotion_record(store, stages["register"]),
    )


def _assert_reaped(run: Run, pid: str) -> None:
    assert run.info.status == "FAILED", run.info.run_name
    error = run.data.tags.get("pipeline.error", "")
    assert REAPED in error, error
    assert f"process {pid} " in error, error


@pytest.mark.parametrize("killed_stage", STAGES)
def test_rerun_after_sigkill_matches_clean_run(
    store: Store, clean_run: CleanRun, killed_stage: str
) -> None:
    done, rest = STAGES[: STAGES.index(killed_stage)], STAGES[STAGES.index(killed_stage) :]

    # ---- the crash: killed after the stage's first output was logged ------------------------
    killed = _pipeline(store, failpoint=killed_stage)
    assert killed.returncode == -signal.SIGKILL, (
        f"exited {killed.returncode}\n--- stderr\n{tail(killed.stderr)}"
    )
    [crashed] = store.runs_of_kind("pipeline")
    assert crashed.info.status == "RUNNING"
    pid = crashed.data.tags["pipeline.pid"]
    crashed_stages = _stage_runs(store, crashed)
    assert sorted(crashed_stages) == sorted((*done, killed_stage))
    half_done = crashed_stages[killed_stage]
    assert half_done.info.status == "RUNNING"
    assert half_done.data.tags["pipeline.pid"] == pid
    assert "pipeline.cache.stored" not in half_done.data.tags, "a half-logged run is reusable"
    assert all(crashed_stages[name].info.status == "FINISHED" for name in done)
    if killed_stage == "register":  # killed after registering, before its run was finished
        assert store.version_numbers(MODEL) == ["1"]
        assert store.alias(MODEL, "champion") == "1"
    else:
        assert MODEL not in store.model_names()

    # ---- the rerun: same command, no failpoint ----------------------------------------------
    # Killed in register, the model was already champion: the rerun's profile stage checks
    # the data against it (its reference changed), so profile runs again too, and only it.
    reference_changed = killed_stage == "register"
    if reference_changed:
        done = tuple(s for s in done if s != "profile")
        rest = tuple(s for s in STAGES if s not in done)
    rerun = _pipeline(store)
    assert_ok(rerun)
    assert (
        f"cache: {len(done)} hit(s) [{', '.join(done)}], {len(rest)} ran [{', '.join(rest)}]"
    ) in rerun.stdout, tail(rerun.stdout)

    # The dead process's runs were marked FAILED, saying why.
    _assert_reaped(store.client.get_run(crashed.info.run_id), pid)
    _assert_reaped(store.client.get_run(half_done.info.run_id), pid)
    for name in done:
        assert store.client.get_run(crashed_stages[name].info.run_id).info.status == "FINISHED"

    [resumed] = [p for p in store.runs_of_kind("pipeline") if p.info.run_id != crashed.info.run_id]
    assert resumed.info.status == "FINISHED", resumed.data.tags.get("pipeline.error")
    stages = _stage_runs(store, resumed)
    assert sorted(stages) == sorted(STAGES)
    if reference_changed:
        reason = stages["profile"].data.tags["pipeline.cache.reason"]
        assert reason.startswith("input changed: champion profile"), reason
    assert all(run.info.status == "FINISHED" for run in stages.values())
    for name in done:  # reused from the crashed pipeline
        tags = stages[name].data.tags
        assert tags["pipeline.cache.status"] == "hit", (name, tags.get("pipeline.cache.reason"))
        assert tags["pipeline.cache.source_run"] == crashed_stages[name].info.run_id, name
    for name in rest:  # computed again, the killed stage included
        tags = stages[name].data.tags
        assert tags["pipeline.cache.status"] == "miss", (name, tags.get("pipeline.cache.reason"))
        assert "pipeline.cache.source_run" not in tags, name
        assert tags["pipeline.cache.stored"] == "true", name

    # The same computation as the clean run, with the same result (but for the drift check
    # against a champion that the clean run did not have).
    same = [s for s in STAGES if not (reference_changed and s == "profile")]
    assert _pick(_cache_keys(stages), same) == _pick(clean_run.cache_keys, same)
    assert _pick(_output_digests(stages), same) == _pick(clean_run.output_digests, same)
    assert _model_metrics(stages) == clean_run.metrics

    # One version, the champion, holding this pipeline's model; never a second registration.
    versions = store.client.search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].run_id == _model_run_id(stages["train"])
    assert _aliases(store) == {"champion": "1", "challenger": "1", "rollback": None}
    promotion = store.promotion(stages["register"].info.run_id)
    assert str(promotion["version"]) == str(promotion["champion_version_after"]) == "1"
    assert store.client.get_model_version(MODEL, "1").tags["pipeline.run_id"] == (
        resumed.info.run_id
    )

    # The audit trail too: the champion is recorded as promoted, for the reason a clean run
    # gives (a rerun after a crash in register must not compare the model with itself).
    record = _promotion_record(store, stages["register"])
    assert record == clean_run.promotion


def test_unchanged_rerun_is_all_hits_and_dry_run_plans_a_change(clean_run: CleanRun) -> None:
    # Runs after the clean run in its store: clean_run's fields were read before this.
    store = clean_run.store
    aliases = _aliases(store)
    assert aliases["champion"] == "1"

    # The clean run made v1 champion: profile checks the data against it now (only profile).
    rerun = _pipeline(store)
    assert_ok(rerun)
    others = [s for s in STAGES if s != "profile"]
    assert f"cache: 6 hit(s) [{', '.join(others)}], 1 ran [profile]" in rerun.stdout, tail(
        rerun.stdout
    )
    assert f"no drift against {MODEL} v1 (@champion)" in rerun.stdout, tail(rerun.stdout)
    assert "nothing registered, no alias moved" in rerun.stdout, tail(rerun.stdout)
    assert store.version_numbers(MODEL) == ["1"]
    assert _aliases(store) == aliases

    clean, rerun_pipeline = store.runs_of_kind("pipeline")
    assert clean.info.run_id == clean_run.pipeline_run_id
    stages = _stage_runs(store, rerun_pipeline)
    assert sorted(stages) == sorted(STAGES)
    profile = stages.pop("profile")
    assert profile.data.tags["pipeline.cache.reason"].startswith("input changed: champion profile")
    for name, run in stages.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["pipeline.cache.status"] == "hit", name
        assert run.data.tags["pipeline.cache.source_run"] == clean_run.stage_run_ids[name]
    assert _model_metrics(stages) == clean_run.metrics

    # --dry-run runs nothing: every stage reuses an earlier run...
    runs_before = len(store.runs())
    plan = _plan(_pipeline(store, "--dry-run", *OVERRIDES))
    computed = {**clean_run.stage_run_ids, "profile": profile.info.run_id}
    assert plan == {name: ("hit", f"reuses run {computed[name]}") for name in STAGES}
    # ...and a changed train parameter reruns train and what depends on it.
    changed = _plan(_pipeline(store, "--dry-run", OVERRIDES[0], "model.max_iter=300"))
    assert {name: status for name, (status, _) in changed.items()} == {
        "ingest": "hit",
        "profile": "hit",
        "validate": "hit",
        "split": "hit",
        "train": "miss",
        "evaluate": "runs",
        "register": "runs",
    }
    assert changed["train"][1] == "config changed: model.max_iter 200 -> 300"
    assert len(store.runs()) == runs_before
    assert store.version_numbers(MODEL) == ["1"]
    assert _aliases(store) == aliases
