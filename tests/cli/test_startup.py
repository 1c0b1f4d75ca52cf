"""cli.startup: imports with the collector off, frozen after; the last exit handler freezes."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_preload_imports_with_the_collector_off_and_freezes_them() -> None:
    done = _python(
        """
        import gc, sys
        from mlflow_pipeline.cli.startup import preload
        collections = []
        gc.callbacks.append(lambda phase, info: collections.append(phase))
        before = gc.get_freeze_count()
        preload("email.mime.text", "decimal")
        assert {"email.mime.text", "decimal"} <= set(sys.modules)
        assert not collections, collections  # no collection while importing
        assert gc.isenabled()
        assert gc.get_freeze_count() > before
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_freeze_at_exit_runs_after_every_other_exit_handler() -> None:
    done = _python(
        """
        import atexit, gc
        from mlflow_pipeline.cli.startup import freeze_at_exit
        freeze_at_exit()
        junk = [[i] for i in range(10_000)]
        atexit.register(lambda: print("frozen before the others:", gc.get_freeze_count()))
        """
    )
    assert done.returncode == 0, done.stderr
    # A handler registered later runs first: nothing was frozen yet when it ran.
    assert done.stdout.strip() == "frozen before the others: 0"


def test_the_first_look_says_whether_the_store_is_a_sqlite_file(tmp_path, monkeypatch):
    from mlflow_pipeline.cli.entry import fast_noop

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    embedded = fast_noop([f"tracking.root={tmp_path}"])
    assert embedded.noop is None  # nothing ran there yet
    assert embedded.embedded_store
    server = fast_noop([f"tracking.root={tmp_path}", "tracking.uri=http://127.0.0.1:5999"])
    assert not server.embedded_store  # its store modules are not imported for nothing
    assert fast_noop(["--dry-run"]).embedded_store is False


def test_a_stage_entry_point_started_by_the_runner_leaves_the_interrupt_line_to_it():
    from mlflow_pipeline.cli.startup import started_by_runner

    assert started_by_runner(["train", "--hydra-options", "", "--pipeline-run-id", "abc"])
    assert started_by_runner(["train", "--pipeline-run-id=abc"])
    assert not started_by_runner(["train", "--pipeline-run-id", ""])  # on its own
    assert not started_by_runner(["train", "--upstream-run-id", "abc"])
    assert not started_by_runner(["main", "--pipeline-run-id", "abc"])
    assert not started_by_runner([])
