"""The stage cache through the real pipeline: each kind of change misses exactly the stages it
should, and says why; policies; uncacheable stages; failed runs are never reused.

One baseline pipeline runs once (module scope). Each scenario gets its own copy of that store's
database (artifacts stay where the baseline logged them), so scenarios never see each other.
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.plan import describe_plan, plan
from mlflow_pipeline.engine.result import describe
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import StageError, ThresholdError
from mlflow_pipeline.stages import evaluate as evaluate_module
from mlflow_pipeline.stages import train as train_module
from mlflow_pipeline.tags import Cache
from tests.helpers import DB_NAME, alias_version, csv_overrides, mixed_frame

STAGES = ["ingest", "profile", "validate", "split", "train", "evaluate", "register"]
FAST = ["model=logistic_regression", "model.max_iter=200", "registry.model_name=customers"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, open_store):
    """The store every scenario starts from: a first pipeline run on a small CSV (it made v1
    the champion), then the same run again, whose profile stage checked drift against v1."""
    root = tmp_path_factory.mktemp("cache-baseline")
    data = root / "customers.csv"
    mixed_frame(200).to_csv(data, index=False)
    with open_store(root) as store:
        first = run_pipeline(store.config(*csv_overrides(data, *FAST)))
        second = run_pipeline(store.config(*csv_overrides(data, *FAST)))
    return root, data, first, second


@pytest.fixture
def scenario(baseline, tmp_path: Path):
    """``run(*overrides)`` on a private copy of the baseline store; returns (result, client)."""
    root, data, *_ = baseline
    db = tmp_path / "copy" / DB_NAME
    db.parent.mkdir()
    shutil.copyfile(root / DB_NAME, db)
    uri = f"sqlite:///{db}"

    def config(*overrides: str, path: Path = data):
        return load_config(
            [
                *csv_overrides(path, *FAST, *overrides),
                f"tracking.uri={uri}",
                f"tracking.root={root}",
            ]
        )

    def run(*overrides: str, path: Path = data):
        return run_pipeline(config(*overrides, path=path))

    run.config = config
    run.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return run


def statuses(result) -> dict[str, str]:
    return {name: d.status for name, d in result.decisions.items()}


def reasons(result, stage: str) -> str:
    return "; ".join(result.decisions[stage].reasons)


def expect(result, misses: set[str]) -> None:
    """Exactly ``misses`` were computed; every other stage was a hit."""
    assert statuses(result) == {s: "miss" if s in misses else "hit" for s in STAGES}


def versions(client: MlflowClient) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions("name = 'customers'"))


def test_first_run_misses_everything_with_no_earlier_run(baseline):
    result = baseline[2]
    expect(result, set(STAGES))
    assert all(reasons(result, s) == "no earlier run" for s in STAGES)


def test_a_context_that_changed_is_said_as_it_reads():
    def manifest(key: str) -> cache.Manifest:
        return cache.Manifest("profile", {}, {}, {}, {"champion profile": key}, {}, {})

    digest = "d823daef83ab" + "7" * 52
    before, after = (manifest(f"m v{n} profile {digest}") for n in (1, 2))
    assert cache.explain(before, after) == [
        "input changed: champion profile: m v1 profile d823daef83ab -> m v2 profile d823daef83ab"
    ]


def test_a_new_champion_reruns_only_the_profile(baseline):
    """The profile stage compares with the champion's training data: when the champion
    changes (here: the first run made v1 champion), only profile runs again."""
    first, second = baseline[2], baseline[3]
    expect(second, {"profile"})
    # A context's key said as it reads, its digest cut short (not "digest <key> -> <key>").
    assert re.fullmatch(
        r"input changed: champion profile: none: no champion yet -> "
        r"customers v1 profile [0-9a-f]{12}",
        reasons(second, "profile"),
    ), reasons(second, "profile")
    assert first.drift == {"checked": False, "reason": "no champion yet"}
    assert second.drift["checked"]
    assert not second.drift["detected"]
    assert second.drift["reference"]["version"] == "1"


def _computed_by(client: MlflowClient, run_id: str) -> str:
    """The run that computed a stage's outputs: itself, or the source of a hit."""
    return client.get_run(run_id).data.tags.get(Cache.SOURCE, run_id)


def test_unchanged_rerun_is_all_hits_and_registers_nothing(scenario, baseline):
    before = scenario.client.get_registered_model("customers").aliases
    result = scenario()
    expect(result, set())
    for stage in STAGES:
        run = scenario.client.get_run(result.stage_run_ids[stage])
        assert run.data.tags[Cache.STATUS] == "hit"
        assert run.data.tags[Cache.SOURCE] == _computed_by(
            scenario.client, baseline[3].stage_run_ids[stage]
        )
        assert run.data.tags["mlflow.parentRunId"] == result.pipeline_run_id
        assert run.info.status == "FINISHED"
    # The hit run of evaluate shows the same metrics as the run it reused.
    evaluate = scenario.client.get_run(result.stage_run_ids["evaluate"]).data.metrics
    source = scenario.client.get_run(baseline[2].stage_run_ids["evaluate"]).data.metrics
    assert evaluate["roc_auc"] == source["roc_auc"]
    assert versions(scenario.client) == ["1"]
    assert scenario.client.get_registered_model("customers").aliases == before
    assert "nothing registered, no alias moved" in describe(result)
    summary = scenario.client.get_run(result.pipeline_run_id).data.tags["pipeline.cache.summary"]
    assert summary == " ".join(f"{s}=hit" for s in STAGES)
    # The datasets of the runs it reused, linked (the UI's Dataset column is not "-").
    pipeline = scenario.client.get_run(result.pipeline_run_id)
    first = scenario.client.get_run(baseline[2].pipeline_run_id)
    assert [_dataset(i) for i in pipeline.inputs.dataset_inputs] == [
        _dataset(i) for i in first.inputs.dataset_inputs
    ]
    assert [i.dataset.name for i in pipeline.inputs.dataset_inputs] == ["raw"]
    for stage in ("validate", "split", "train", "evaluate"):
        hit = scenario.client.get_run(result.stage_run_ids[stage])
        computed = scenario.client.get_run(hit.data.tags[Cache.SOURCE])
        assert hit.inputs.dataset_inputs, stage
        assert sorted(map(_dataset, hit.inputs.dataset_inputs)) == sorted(
            map(_dataset, computed.inputs.dataset_inputs)
        )


def _dataset(entry) -> tuple[str, str]:
    return entry.dataset.name, entry.dataset.digest


def test_model_config_change_reruns_train_and_what_follows(scenario):
    result = scenario("model.C=0.5")
    expect(result, {"train", "evaluate", "register"})
    assert reasons(result, "train") == "config changed: model.C 1.0 -> 0.5"
    assert reasons(result, "evaluate").startswith("input changed: train/model digest")
    assert "input changed: evaluate/metrics digest" in reasons(result, "register")
    assert versions(scenario.client) == ["1", "2"]


def test_a_validate_rule_change_reruns_validate_only_not_the_profile(scenario):
    """profile reads validation.drift and schema_changes; a rule of validate's own (here a
    range every row meets) reruns validate, whose outputs come out the same: all else hits."""
    result = scenario("+validation.ranges.age={min: 0, max: 200}")
    expect(result, {"validate"})
    # Not also "validation.ranges {} -> <absent>": the keys under it say what changed.
    assert reasons(result, "validate") == (
        "config changed: validation.ranges.age.max <absent> -> 200, "
        "validation.ranges.age.min <absent> -> 0"
    )


def test_split_config_change_reruns_split_and_everything_after(scenario):
    result = scenario("split.test_size=0.3")
    expect(result, {"split", "train", "evaluate", "register"})
    assert reasons(result, "split") == "config changed: split.test_size 0.2 -> 0.3"
    assert reasons(result, "train").startswith("input changed: split/train digest")


def test_changed_data_file_reruns_everything(scenario, baseline, tmp_path: Path):
    frame = mixed_frame(200)
    frame.loc[3, "income"] = 1234.5
    changed = tmp_path / "customers.csv"
    frame.to_csv(changed, index=False)
    result = scenario(path=changed)
    expect(result, set(STAGES))
    assert reasons(result, "ingest").startswith("file changed: data.path digest")
    # The file is in ingest's key only: the later stages see the change in their input.
    assert "input changed: ingest/raw digest" in reasons(result, "validate")
    assert "file changed" not in reasons(result, "validate")


def test_a_byte_only_change_of_the_data_file_reruns_only_ingest(scenario, baseline, tmp_path):
    """The same table in other bytes (CRLF line ends): ingest reads it again and makes the same
    `raw`, so every later stage is a hit (they used to rerun, train included, on the file's
    digest alone)."""
    crlf = tmp_path / "crlf" / "customers.csv"
    crlf.parent.mkdir()
    crlf.write_bytes(baseline[1].read_bytes().replace(b"\n", b"\r\n"))
    result = scenario(path=crlf)
    expect(result, {"ingest"})
    assert reasons(result, "ingest").startswith("file changed: data.path digest")


def test_same_data_at_another_path_is_all_hits(scenario, baseline, tmp_path: Path):
    # Same file name: the experiment and model are named after it.
    moved = tmp_path / "elsewhere" / "customers.csv"
    moved.parent.mkdir()
    shutil.copyfile(baseline[1], moved)
    expect(scenario(path=moved), set())


def _patched_source(monkeypatch: pytest.MonkeyPatch, target, edit) -> None:
    original = cache.source_of

    def source_of(obj):
        text = original(obj)
        return edit(text) if obj is target else text

    monkeypatch.setattr(cache, "source_of", source_of)


def test_code_change_in_a_helper_reruns_train_and_what_follows(scenario, monkeypatch):
    _patched_source(
        monkeypatch,
        train_module.build_estimator,
        lambda text: text.replace(
            "return instantiate(", "params = dict(params)\n    return instantiate("
        ),
    )
    result = scenario()
    expect(result, {"train", "evaluate", "register"})
    assert reasons(result, "train") == (
        "code changed: mlflow_pipeline/stages/train.py (build_estimator)"
    )


def test_code_change_in_another_module_reruns_the_stages_that_call_it(scenario, monkeypatch):
    # evaluate.metrics_of is evaluate's own code and a helper that register calls (through
    # model_metrics) to re-score the champion; train does not reach it.
    _patched_source(
        monkeypatch,
        evaluate_module.metrics_of,
        lambda text: text.replace(
            "    classes = list(", "    classes = None\n    classes = list(", 1
        ),
    )
    result = scenario()
    expect(result, {"evaluate", "register"})
    assert "mlflow_pipeline/stages/evaluate.py (metrics_of)" in reasons(result, "evaluate")
    assert reasons(result, "register") == (
        "code changed: mlflow_pipeline/stages/evaluate.py (metrics_of)"
    )


def test_docstring_comment_and_blank_line_edits_do_not_count(scenario, monkeypatch):
    def cosmetic(text: str) -> str:
        body = text.replace('"""Returns', '"""Trains.\n\n    Returns', 1)
        return body.replace("\n", "\n\n    # a comment\n", 1)

    _patched_source(monkeypatch, train_module.train, cosmetic)
    assert cosmetic(cache.source_of(train_module.train)) != cache.source_of(train_module.train)
    expect(scenario(), set())


def test_package_upgrade_reruns_the_stages_that_depend_on_it(scenario, monkeypatch):
    real = metadata.version
    monkeypatch.setattr(
        metadata,
        "version",
        lambda name: "99.0" if name == "scikit-learn" else real(name),
    )
    result = scenario()
    # profile and validate do not use scikit-learn, and ingest's output is unchanged.
    expect(result, {"ingest", "split", "train", "evaluate", "register"})
    assert reasons(result, "ingest").startswith("packages changed: scikit-learn ")
    assert reasons(result, "ingest").endswith(" -> 99.0")


def test_recompute_policy_runs_the_stage_and_an_identical_result_feeds_hits(scenario):
    result = scenario("+cache.stages.train=recompute")
    assert statuses(result) == {**{s: "hit" for s in STAGES}, "train": "recompute"}
    assert versions(scenario.client) == ["1"]


def test_off_policy_is_never_reused(scenario):
    first = scenario("+cache.stages.train=off")
    second = scenario("+cache.stages.train=off")
    for result in (first, second):
        assert statuses(result)["train"] == "off"
        assert {statuses(result)[s] for s in ("evaluate", "register")} == {"miss"}
        run = scenario.client.get_run(result.stage_run_ids["train"])
        assert Cache.STORED not in run.data.tags
    # Each rerun trains again and registers nothing new: the same model, byte for byte, is
    # already version 1 (the registry's content digest).
    assert versions(scenario.client) == ["1"]


def test_unset_seed_is_not_cacheable_and_says_so(scenario):
    result = scenario("seed=null")
    assert statuses(result)["split"] == "uncacheable"
    assert reasons(result, "split").startswith("split.random_state is unset (seed: null)")
    # logistic regression has no random_state: train is cacheable, but its input is new.
    assert statuses(result)["train"] == "miss"
    again = scenario("seed=null")
    assert statuses(again)["split"] == "uncacheable"


def test_unset_model_seed_makes_train_uncacheable(scenario):
    result = scenario(
        "model=hist_gradient_boosting", "model.max_iter=10", "model.random_state=null"
    )
    assert statuses(result)["train"] == "uncacheable"
    assert reasons(result, "train").startswith("model.random_state is unset")


def test_a_failed_stage_is_never_reused(scenario):
    strict = ("model.C=0.01", "evaluation.thresholds.roc_auc.min=0.9999")
    for _ in range(2):
        with pytest.raises(ThresholdError):
            scenario(*strict)
    runs = scenario.client.search_runs(
        [scenario.client.get_experiment_by_name("customers").experiment_id],
        "tags.`pipeline.stage` = 'evaluate' and attributes.status = 'FAILED'",
    )
    assert len(runs) == 2  # the second attempt ran evaluate again
    assert all(Cache.STORED not in r.data.tags for r in runs)


def test_a_miss_after_a_run_that_never_finished_says_so_and_what_differs(make_config, tmp_path):
    """The first run's evaluate failed its threshold; the rerun with a lower one used to be
    explained as "no earlier run"."""
    data = tmp_path / "customers.csv"
    mixed_frame(200).to_csv(data, index=False)
    with pytest.raises(ThresholdError):
        run_pipeline(
            make_config(*csv_overrides(data, *FAST), "evaluation.thresholds.roc_auc.min=0.9999")
        )
    result = run_pipeline(
        make_config(*csv_overrides(data, *FAST), "evaluation.thresholds.roc_auc.min=0.5")
    )
    assert result.decisions["train"].hit
    why = reasons(result, "evaluate")
    assert why.startswith("no earlier finished run; the last one (")
    assert ") FAILED; config changed: evaluation.thresholds.roc_auc.min 0.9999 -> 0.5" in why


def test_a_champion_chosen_with_promote_is_compared_by_the_next_run(scenario):
    """`promote` records its move, so it is not an outside move; the next run used to reuse
    register's decision made against the old champion and compare nothing."""
    from mlflow_pipeline.registry.promotion import promote_by_hand

    weaker = scenario("model.C=0.0005")
    assert weaker.promotion["promote"] is False
    challenger = weaker.promotion["version"]
    promote_by_hand(scenario.client, f"models:/customers/{challenger}", reason="by hand")
    result = scenario()
    assert result.decisions["register"].status == "miss"
    assert "alias moves made with mlflow-pipeline promote" in reasons(result, "register")
    assert result.promotion["champion_version"] == str(challenger)
    # Compared once: the run after it reuses that decision.
    assert scenario().decisions["register"].hit


def test_a_champion_another_run_made_is_compared_when_the_old_data_comes_back(scenario, tmp_path):
    """Data A made v1 champion; data B (its labels flipped) made v2 champion; A again: every
    stage before register is a hit, and register had been too, reusing A's decision made when
    v1 was champion, so v2 (wrong on A) stayed. The champion is part of register's key."""
    flipped = mixed_frame(200).assign(churned=lambda f: 1 - f["churned"])
    other = tmp_path / "flipped.csv"
    flipped.to_csv(other, index=False)
    moved = scenario("tracking.experiment_name=customers", path=other)  # as a project fixes it
    assert moved.promotion["promote"] is True, moved.promotion
    back = scenario()
    expect(back, {"profile", "register"})
    # Explained against the run on the same data (A's, which left v1 champion), not against
    # the newest (B's, whose data differs but which left today's champion).
    assert reasons(back, "register") == "input changed: champion: customers v1 -> customers v2"
    assert back.promotion["champion_version"] == moved.promotion["version"]
    assert back.promotion["promote"] is True, back.promotion
    assert alias_version(scenario.client, "customers", "champion") == "1"
    # The decision is reused while v1 is the champion it left.
    assert scenario().decisions["register"].hit


def test_a_hit_whose_files_are_gone_says_how_to_compute_it_again(make_config, tmp_path):
    data = tmp_path / "customers.csv"
    mixed_frame(200).to_csv(data, index=False)
    first = run_pipeline(make_config(*csv_overrides(data, *FAST)))
    split_run = MlflowClient().get_run(first.stage_run_ids["split"])
    shutil.rmtree(Path(split_run.info.artifact_uri.removeprefix("file://")) / "data")
    with pytest.raises(
        StageError,
        match=r"\[train\] dataset 'train' is not an artifact of run \w+.*; its files are gone "
        r"from the store .*\+cache\.stages\.split=recompute",
    ):
        run_pipeline(make_config(*csv_overrides(data, *FAST), "model.C=0.5"))


def test_plan_shows_hits_misses_and_pending_without_running(scenario):
    cfg = scenario.config("model.C=0.5")
    experiment = scenario.client.get_experiment_by_name("customers").experiment_id
    runs_before = len(scenario.client.search_runs([experiment], max_results=1000))
    decisions = plan(cfg)
    assert [d.status for d in decisions] == [
        "hit",
        "hit",
        "hit",
        "hit",
        "miss",
        "pending",
        "pending",
    ]
    text = describe_plan(decisions)
    assert "train     miss  config changed: model.C 1.0 -> 0.5" in text
    assert "evaluate  runs  input(s) model are recomputed first" in text
    # What already differs from a pending stage's last run is said, not only that it waits.
    both = describe_plan(plan(scenario.config("model.C=0.5", "evaluation.importance_memory_mb=64")))
    assert (
        "evaluate  runs  config changed: evaluation.importance_memory_mb 256.0 -> 64.0; "
        "input(s) model are recomputed first; a hit only if an earlier run had these settings "
        "and inputs\n"
    ) in both
    assert len(scenario.client.search_runs([experiment], max_results=1000)) == runs_before


def test_the_plan_stays_aligned_with_a_long_status_or_stage_name():
    decisions = [
        cache.CacheDecision("ingest", "hit", None, source_run_id="r1"),
        cache.CacheDecision("split", "uncacheable", None, ["split.random_state is unset"]),
        cache.CacheDecision("feature_engineering", "pending", None, ["input(s) x first"]),
    ]
    assert describe_plan(decisions).splitlines() == [
        "ingest              hit         reuses run r1",
        "split               uncacheable split.random_state is unset",
        "feature_engineering runs        input(s) x first",
    ]


# ------------------------------------------------------------------- code hashing, real files
@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package ``toy`` on disk: ``toy.stage.run`` calls ``toy.helpers.clean``; ``write``
    rewrites a module and reloads it, as editing code between two runs does."""
    import importlib
    import sys

    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(module: str, text: str):
        (package / f"{module}.py").write_text(text)
        importlib.invalidate_caches()
        name = f"toy.{module}"
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)

    write(
        "helpers", "LIMIT = 3\n\ndef clean(x):\n    return x[:LIMIT]\n\ndef unused():\n    pass\n"
    )
    write("stage", "from toy import helpers\n\ndef run(cfg, x):\n    return helpers.clean(x)\n")
    yield write
    for name in [m for m in sys.modules if m == "toy" or m.startswith("toy.")]:
        del sys.modules[name]


def test_code_hashes_follow_helpers_and_constants_in_other_modules(toy_package):
    stage = toy_package(
        "stage", "from toy import helpers\n\ndef run(cfg, x):\n    return helpers.clean(x)\n"
    )
    hashes = cache.code_hashes([stage.run])
    assert set(hashes) == {"toy/stage.py:run", "toy/helpers.py:clean", "toy/helpers.py:LIMIT"}


def test_code_hashes_see_a_helper_edit_but_not_docstrings_or_comments(toy_package):
    def hashes():
        stage = toy_package(
            "stage", "from toy import helpers\n\ndef run(cfg, x):\n    return helpers.clean(x)\n"
        )
        return cache.code_hashes([stage.run])

    before = hashes()
    toy_package(
        "helpers",
        'LIMIT = 3\n\ndef clean(x):\n    """Docs."""\n    # why\n\n    return x[:LIMIT]\n\n'
        "def unused():\n    return 1\n",
    )
    assert hashes() == before  # docstring, comment, blank line; an unreached function
    toy_package("helpers", "LIMIT = 4\n\ndef clean(x):\n    return x[:LIMIT]\n")
    changed = hashes()
    assert [k for k in before if before[k] != changed[k]] == ["toy/helpers.py:LIMIT"]
    toy_package("helpers", "LIMIT = 4\n\ndef clean(x):\n    return x[:LIMIT + 0]\n")
    assert hashes()["toy/helpers.py:clean"] != changed["toy/helpers.py:clean"]


_HASH_THE_REFERENCE = """
import inspect, json, sys
from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.pipeline import load_pipeline
mode = sys.argv[1]
if mode == "sources":  # bypass the memo: a patched source_of reads every source
    cache.source_of = lambda obj: cache._SOURCE_OF(obj)
if mode == "memo only":  # every analysis must come from the memo
    def no_source(obj):
        raise AssertionError(f"read the source of {obj}")
    inspect.getsource = no_source
stages = load_pipeline(load_config([])).stages
print(json.dumps([cache.code_hashes([s.func, s.gate]) for s in stages]))
"""


def _python_json(script: str, cache_home: Path, *args: str) -> Any:
    """What ``python -c script *args`` prints as JSON, with its own XDG cache directory."""
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "XDG_CACHE_HOME": str(cache_home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_code_analyses_are_remembered_across_processes_with_the_same_hashes(tmp_path: Path):
    import json

    def hashes(mode: str) -> list[dict[str, str]]:
        return _python_json(_HASH_THE_REFERENCE, tmp_path / "cache", mode)

    first = hashes("first")  # no memo yet: analysed from the sources, then remembered
    (memo,) = (tmp_path / "cache" / "mlflow_pipeline").glob("code-analysis-py*.json")
    assert len(json.loads(memo.read_text())) > 50
    assert hashes("memo only") == first
    assert hashes("sources") == first
    memo.write_text('{"not": "an analysis", "x": [1, 2, 3]')  # damaged: an empty memo
    assert hashes("first") == first
    assert hashes("memo only") == first


_EDIT_WHILE_RUNNING = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mlflow_pipeline.engine import cache
import toyx.helpers as helpers
first = cache.code_hashes([helpers.clean])
Path(sys.argv[1], "toyx", "helpers.py").write_text(sys.argv[2])  # edited, not reloaded
print(json.dumps([first, cache.code_hashes([helpers.clean])]))
"""

_HASH_TOYX = """
import json, sys
sys.path.insert(0, sys.argv[1])
from mlflow_pipeline.engine import cache
if sys.argv[2] == "sources":
    cache.source_of = lambda obj: cache._SOURCE_OF(obj)
import toyx.helpers as helpers
print(json.dumps(cache.code_hashes([helpers.clean])))
"""


def test_a_process_running_old_code_neither_changes_its_hash_nor_teaches_the_memo(tmp_path):
    """A file edited while a process runs (a sweep, a notebook): that process keeps the hash
    of the code it runs, and what it read before the edit is not remembered under the new
    content, where a later run of the new code would find it (a stale cache hit)."""
    package = tmp_path / "pkg" / "toyx"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    old, new = "def clean(x):\n    return x[:3]\n", "def clean(x):\n    return x[:4]\n"

    def python(script: str, *args: str) -> Any:
        return _python_json(script, tmp_path / "cache", str(tmp_path / "pkg"), *args)

    def fresh(text: str) -> dict[str, str]:  # the memo bypassed: analysed from the source
        (package / "helpers.py").write_text(text)
        return python(_HASH_TOYX, "sources")

    old_hashes, new_hashes = fresh(old), fresh(new)
    assert old_hashes != new_hashes
    for memo_knows in (False, True):  # the new content unknown to the memo, then known
        if memo_knows:
            (package / "helpers.py").write_text(new)
            assert python(_HASH_TOYX, "memo") == new_hashes
        (package / "helpers.py").write_text(old)
        before, after = python(_EDIT_WHILE_RUNNING, new)
        assert before == old_hashes
        assert after == old_hashes  # the code this process runs
        assert python(_HASH_TOYX, "memo") == new_hashes  # a new process, the new code


def test_code_read_from_a_pipe_is_not_remembered(tmp_path):
    """A function whose file cannot be read again (a script piped to python) has its bytecode
    hashed; that is not a function of the file's content, so it is not remembered."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    script = (
        "import json\n"
        "from mlflow_pipeline.engine import cache\n"
        "def step(x):\n"
        "    return x + {n}\n"
        "print(json.dumps(cache.code_hashes([step])))\n"
    )
    outputs = [
        subprocess.run(
            [sys.executable, "/dev/stdin"],
            input=script.format(n=n),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for n in (1, 2)
    ]
    assert outputs[0] != outputs[1]


def test_the_memo_forgets_other_versions_unused_for_a_month(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    memo = cache._AnalysisMemo()
    assert memo.path is not None
    assert memo.path.parent == tmp_path / "mlflow_pipeline"
    memo.path.parent.mkdir(parents=True)
    old, recent = (memo.path.parent / f"code-analysis-py311-{v}.json" for v in ("old", "recent"))
    for other in (old, recent):
        other.write_text("{}")
    month_ago = time.time() - 31 * 86_400
    os.utime(old, (month_ago, month_ago))
    memo.put("a" * 64 + ":f@1", cache._Analysis("b" * 64, (("x",),)))
    memo.save()
    assert not old.exists()
    assert recent.exists()
    assert cache._AnalysisMemo().get("a" * 64 + ":f@1") == cache._Analysis("b" * 64, (("x",),))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    assert cache._AnalysisMemo().path.is_absolute()


def test_project_code_the_config_names_is_in_the_key_and_installed_code_is_not(toy_package):
    """A project's feature transformer named by ``_target_`` (train's ``features``): editing it
    must rerun train. scikit-learn's classes count by its version, not their source."""
    from omegaconf import OmegaConf

    from tests.helpers import REFERENCE as PIPELINE

    toy_package("features", "class Clip:\n    def transform(self, x):\n        return x[:3]\n")
    cfg = load_config(["data=csv", "data.path=x.csv", "data.target=y", "data.task=classification"])
    OmegaConf.update(cfg, "features.numeric_scaler._target_", "toy.features.Clip", merge=False)
    OmegaConf.update(cfg, "features.unknown", {"_target_": "toy.nowhere.Nothing"}, force_add=True)
    named = cache.config_code(cfg, ["features", "model"])
    assert [f"{o.__module__}.{o.__qualname__}" for o in named] == ["toy.features.Clip"]
    train = PIPELINE.stage_named("train")
    before = cache.build_manifest(train, cfg, {"train": "a" * 64})
    assert "toy/features.py:Clip" in before.code
    assert not any(k.startswith("sklearn/") for k in before.code)
    toy_package("features", "class Clip:\n    def transform(self, x):\n        return x[:4]\n")
    after = cache.build_manifest(train, cfg, {"train": "a" * 64})
    assert after.code["toy/features.py:Clip"] != before.code["toy/features.py:Clip"]
    assert after.key != before.key


def test_manifest_key_changes_with_each_component():
    from tests.helpers import REFERENCE as PIPELINE

    stage = PIPELINE.stage_named("split")
    cfg = load_config([])
    base = cache.build_manifest(stage, cfg, {"validated": "a" * 64, "contract": "b" * 64})
    assert base.key == cache.Manifest.from_json(base.to_json()).key
    other_input = cache.build_manifest(stage, cfg, {"validated": "c" * 64, "contract": "b" * 64})
    other_config = cache.build_manifest(
        stage, load_config(["split.test_size=0.3"]), {"validated": "a" * 64, "contract": "b" * 64}
    )
    assert len({base.key, other_input.key, other_config.key}) == 3
    assert set(base.packages) >= {"python", "numpy", "pandas", "pyarrow", "pandera", "scikit-learn"}
    # Config the stage does not read is not in its key.
    unrelated = cache.build_manifest(
        stage, load_config(["model.max_iter=7"]), {"validated": "a" * 64, "contract": "b" * 64}
    )
    assert unrelated.key == base.key
