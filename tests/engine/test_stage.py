"""The run wrapper: one child run per stage, validated and logged datasets, failures recorded."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from mlflow_pipeline.engine.spec import Dataset, Pipeline, Stage
from mlflow_pipeline.engine.stage import Handoff, PeakMemory, RunContext, run_stage
from mlflow_pipeline.errors import DataValidationError, PipelineError, StageError, ThresholdError
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.store.tracking import Tracking, ensure_experiment
from mlflow_pipeline.tags import MLflow, Runs

NUMBERS_SCHEMA = pa.DataFrameSchema(
    {"n": pa.Column(int, pa.Check.ge(0), coerce=True)}, strict=True, name="numbers"
)
NUMBERS = Dataset("numbers", schema=lambda cfg, contract: NUMBERS_SCHEMA)
NOTE = Dataset("note", kind="text", filename="note.txt")
SCORES = Dataset("scores", log_as_metrics=True)


def produce(values):
    return Stage(
        "produce",
        lambda cfg: {"numbers": pd.DataFrame({"n": values})},
        outputs=(NUMBERS,),
        config_keys=("data", "seed"),
    )


def consume(cfg, numbers: pd.DataFrame) -> dict:
    total = int(numbers["n"].sum())
    return {
        "note": f"total={total}",
        "scores": pd.DataFrame({"metric": ["total"], "value": [float(total)]}),
    }


CONSUME = Stage("consume", consume, inputs=(NUMBERS,), outputs=(NOTE, SCORES))


@pytest.fixture
def cfg(make_config):
    return make_config()


@pytest.fixture
def client(tracking_store) -> MlflowClient:
    return tracking_store.client()


@pytest.fixture
def ctx(tracking_store, client: MlflowClient) -> RunContext:
    store = Tracking(uri=tracking_store.uri, artifact_root=str(tracking_store.root / "mlruns"))
    experiment_id = ensure_experiment(client, "stages", store)
    parent = client.create_run(experiment_id, run_name="pipeline").info.run_id
    return RunContext(
        client=client,
        pipeline=Pipeline("stages", ()),
        experiment_id=experiment_id,
        pipeline_run_id=parent,
        runner_mode="in_process",
    )


def stage_run(client: MlflowClient, ctx: RunContext, name: str) -> Run:
    runs = client.search_runs([ctx.experiment_id], f"tags.`{Runs.STAGE}` = '{name}'")
    assert len(runs) == 1
    return runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_successful_stage_run(cfg, ctx: RunContext, client: MlflowClient):
    outputs = run_stage(produce([1, 2, 3]), cfg, ctx, {})
    run = stage_run(client, ctx, "produce")
    assert outputs["numbers"].run_id == run.info.run_id
    pd.testing.assert_frame_equal(outputs["numbers"].value, pd.DataFrame({"n": [1, 2, 3]}))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "produce"
    tags = run.data.tags
    assert tags[Runs.KIND] == "stage"
    assert tags[MLflow.PARENT] == tags[Runs.PIPELINE_RUN] == ctx.pipeline_run_id
    assert tags["pipeline.digest.output.numbers"] == artifacts.digest(outputs["numbers"].value)
    assert run.data.params["data.name"] == "breast_cancer"
    assert run.data.params["seed"] == "42"
    assert "model.name" not in run.data.params  # only the stage's config slice
    metrics = run.data.metrics
    assert metrics["rows.output.numbers"] == 3
    assert metrics["wall_time_s"] > 0
    assert metrics["peak_rss_mb"] > 10
    assert artifact_paths(client, run.info.run_id) == {
        "config.yaml",
        "cache.json",
        "data/numbers.parquet",
    }
    assert "seed: 42" in artifacts.load_text(run.info.run_id, "config.yaml")


def test_inputs_are_read_from_the_producing_run(cfg, ctx: RunContext, client: MlflowClient):
    produced = run_stage(produce([4, 5]), cfg, ctx, {})
    from_store = {"numbers": Handoff(run_id=produced["numbers"].run_id)}  # not in memory
    outputs = run_stage(CONSUME, cfg, ctx, from_store)
    assert outputs["note"].value == "total=9"
    run = stage_run(client, ctx, "consume")
    assert run.data.tags["pipeline.upstream.numbers"] == produced["numbers"].run_id
    assert run.data.metrics["rows.input.numbers"] == 2
    assert run.data.metrics["total"] == 9.0  # log_as_metrics
    assert artifacts.load_text(run.info.run_id, "note.txt") == "total=9"
    assert "pipeline.digest.output.note" in run.data.tags


def test_invalid_output_fails_the_run_with_the_failure_table(
    cfg, ctx: RunContext, client: MlflowClient, tmp_path
):
    with pytest.raises(DataValidationError, match=r"\[produce\] dataset 'numbers'") as info:
        run_stage(produce([1, -2, -3]), cfg, ctx, {})
    run = stage_run(client, ctx, "produce")
    assert run.info.status == "FAILED"
    assert "column 'n', check greater_than_or_equal_to(0): 2 row(s)" in run.data.tags[Runs.ERROR]
    assert artifact_paths(client, run.info.run_id) == {
        "config.yaml",
        "cache.json",
        "failures/numbers.csv",
        # Every check of the gate and its status, with a chart of the failing rows.
        "reports/validation.html",
    }
    html = Path(
        client.download_artifacts(run.info.run_id, "reports/validation.html", str(tmp_path))
    ).read_text()
    assert "greater_than_or_equal_to(0)" in html
    assert "data:image/png;base64," in html
    logged = pd.read_csv(
        client.download_artifacts(run.info.run_id, "failures/numbers.csv", str(tmp_path))
    )
    assert len(logged) == len(info.value.failure_cases) == 2
    assert sorted(logged["failure_case"]) == [-3, -2]
    assert set(logged["column"]) == {"n"}


def test_invalid_input_fails_the_consuming_run(cfg, ctx: RunContext, client: MlflowClient):
    bad = {"numbers": Handoff(run_id="elsewhere", value=pd.DataFrame({"n": [1], "extra": [2]}))}
    with pytest.raises(
        DataValidationError, match=r"(?s)\[consume\] dataset 'numbers'.*column_in_schema"
    ):
        run_stage(CONSUME, cfg, ctx, bad)
    run = stage_run(client, ctx, "consume")
    assert run.info.status == "FAILED"
    assert "failures/numbers.csv" in artifact_paths(client, run.info.run_id)


def test_unchanged_in_memory_input_keeps_the_producers_digest(cfg, ctx: RunContext, client):
    produced = run_stage(produce([4, 5]), cfg, ctx, {})
    run_stage(CONSUME, cfg, ctx, produced)
    out = stage_run(client, ctx, "produce").data.tags["pipeline.digest.output.numbers"]
    into = stage_run(client, ctx, "consume").data.tags["pipeline.digest.input.numbers"]
    assert into == out


def test_a_stage_cannot_change_an_in_memory_input_for_the_next_stage(cfg, ctx: RunContext):
    def vandal(cfg, numbers: pd.DataFrame) -> dict:
        numbers.loc[0, "n"] = -1  # in place: must not leak into the producer's frame
        return {"note": "changed"}

    produced = run_stage(produce([4, 5]), cfg, ctx, {})
    run_stage(Stage("vandal", vandal, inputs=(NUMBERS,), outputs=(NOTE,)), cfg, ctx, produced)
    assert produced["numbers"].value["n"].tolist() == [4, 5]
    assert run_stage(CONSUME, cfg, ctx, produced)["note"].value == "total=9"


def test_a_frame_from_another_process_is_validated(cfg, ctx: RunContext, client):
    produced = run_stage(produce([4, 5]), cfg, ctx, {})
    foreign = Handoff(run_id=produced["numbers"].run_id, value=pd.DataFrame({"n": [-1]}))
    with pytest.raises(
        DataValidationError, match=r"(?s)\[consume\] dataset 'numbers'.*greater_than_or_equal_to"
    ):
        run_stage(CONSUME, cfg, ctx, {"numbers": foreign})
    assert stage_run(client, ctx, "consume").info.status == "FAILED"


def test_a_bug_in_a_stage_logs_its_traceback(cfg, ctx: RunContext, client: MlflowClient):
    def broken(cfg):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom$"):
        run_stage(Stage("broken", broken, outputs=(NUMBERS,)), cfg, ctx, {})
    run = stage_run(client, ctx, "broken")
    assert run.info.status == "FAILED"
    assert run.data.tags[Runs.ERROR] == "boom"
    trace = artifacts.load_text(run.info.run_id, "error.txt")
    assert "Traceback" in trace
    assert "RuntimeError: boom" in trace


def test_an_expected_failure_is_named_after_its_stage(cfg, ctx: RunContext, client):
    def refuses(cfg):
        raise PipelineError("no thanks")

    with pytest.raises(PipelineError, match=r"^\[refuses\] no thanks$"):
        run_stage(Stage("refuses", refuses), cfg, ctx, {})
    run = stage_run(client, ctx, "refuses")
    assert run.data.tags[Runs.ERROR] == "[refuses] no thanks"
    assert "error.txt" not in artifact_paths(client, run.info.run_id)


def test_missing_output_is_a_stage_error(cfg, ctx: RunContext, client: MlflowClient):
    def misspelt(cfg):
        return {"numbrs": pd.DataFrame({"x": [1]})}

    def bare(cfg):
        return pd.DataFrame({"x": [1]})

    with pytest.raises(
        StageError,
        match=r"^\[silent\] .*misspelt returned no 'numbers' \(declared under outputs\); it "
        r"returned 'numbrs'$",
    ):
        run_stage(Stage("silent", misspelt, outputs=(NUMBERS,)), cfg, ctx, {})
    assert stage_run(client, ctx, "silent").info.status == "FAILED"
    with pytest.raises(
        StageError, match=r"bare returned a DataFrame; a stage function returns a dict of its "
        r"outputs: \{'numbers': \.\.\.\}",
    ):  # fmt: skip
        run_stage(Stage("bare", bare, outputs=(NUMBERS,)), cfg, ctx, {})


def test_missing_input_is_a_stage_error(cfg, ctx: RunContext, client: MlflowClient):
    with pytest.raises(StageError, match=r"\[consume\] input 'numbers' has no producing run"):
        run_stage(CONSUME, cfg, ctx, {})
    assert stage_run(client, ctx, "consume").info.status == "FAILED"


def test_gate_failure_keeps_the_outputs_and_fails_the_run(cfg, ctx: RunContext, client):
    def gate(cfg, values):
        raise ThresholdError("too small", stage="gated")

    stage = Stage("gated", produce([1]).func, outputs=(NUMBERS,), gate=gate)
    with pytest.raises(ThresholdError, match=r"^\[gated\] too small$"):
        run_stage(stage, cfg, ctx, {})
    run = stage_run(client, ctx, "gated")
    assert run.info.status == "FAILED"
    assert "data/numbers.parquet" in artifact_paths(client, run.info.run_id)


def test_interrupt_marks_the_run_killed(cfg, ctx: RunContext, client: MlflowClient):
    def interrupted(cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        run_stage(Stage("interrupted", interrupted), cfg, ctx, {})
    assert stage_run(client, ctx, "interrupted").info.status == "KILLED"


def test_resumes_a_run_created_for_it(cfg, ctx: RunContext, client: MlflowClient):
    created = client.create_run(ctx.experiment_id, run_name="produce").info.run_id
    outputs = run_stage(produce([7]), cfg, ctx, {}, run_id=created)
    assert outputs["numbers"].run_id == created
    run = client.get_run(created)
    assert run.info.status == "FINISHED"
    assert run.data.tags[Runs.STAGE] == "produce"


def test_peak_memory_is_sampled():
    with PeakMemory(interval_s=0.001) as memory:
        block = bytearray(50 * 2**20)
    assert memory.peak_mb > len(block) / 2**20


def test_a_long_stage_logs_a_heartbeat(caplog):
    with caplog.at_level(logging.INFO, "mlflow_pipeline"):
        with PeakMemory(interval_s=0.01, stage="train", heartbeat_s=0.05) as memory:
            deadline = time.monotonic() + 30
            while sum("still running" in r.getMessage() for r in caplog.records) < 2:
                assert time.monotonic() < deadline, "fewer than 2 heartbeats in 30 s"
                time.sleep(0.05)
    beats = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert len(beats) >= 2, beats
    assert beats[0].startswith("stage train: still running (0 s, ")
    assert memory.peak_mb > 0


def test_a_stage_s_work_sets_its_thread_choice(cfg, ctx: RunContext, client: MlflowClient, caplog):
    """``work`` counts what the stage's native code does (evaluate: its importance copies), so
    a small input with much work is not given one thread as a small input."""
    from mlflow_pipeline.engine import threads

    seen = {}

    def work(cfg, numbers: pd.DataFrame) -> int:
        seen["rows"] = len(numbers)
        return threads.SMALL_CELLS * 10

    numbers = run_stage(produce([1, 2, 3]), cfg, ctx, {})
    caplog.set_level(logging.INFO, logger="mlflow_pipeline.engine.stage")
    run_stage(CONSUME, cfg, ctx, numbers)
    assert "[consume] 1 thread(s) (3 values: small input)" in caplog.text
    caplog.clear()
    heavy = Stage("heavy", consume, inputs=(NUMBERS,), outputs=(NOTE, SCORES), work=work)
    run_stage(heavy, cfg, ctx, numbers)
    assert seen == {"rows": 3}
    assert "CPUs idle: other work used " in caplog.text
    assert "small input" not in caplog.text
    assert int(stage_run(client, ctx, "heavy").data.params["threads"]) >= 1
