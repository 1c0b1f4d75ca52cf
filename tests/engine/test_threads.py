"""Thread counts chosen for a stage's native code: the rule, the measurement of other
processes' CPU use (with a real busy process), and the limit as threadpoolctl sees it."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from mlflow_pipeline.engine import threads


def test_a_number_is_used_as_given_and_auto_gives_one_thread_to_a_small_input():
    assert threads.choose(3, 10, None) == threads.ThreadChoice(3, "runner.threads")
    small = threads.choose("auto", threads.SMALL_CELLS - 1, threads.CpuMonitor())
    assert small is not None
    assert small.threads == 1
    assert "small input" in small.why
    assert threads.choose("auto", 0, None) is None  # no frame input: libraries' defaults


def test_frame_cells_counts_only_frames():
    import pandas as pd

    values = {"a": pd.DataFrame({"x": range(10), "y": range(10)}), "b": "text", "c": None}
    assert threads.frame_cells(values) == 20


@pytest.mark.skipif(threads.cpus_allowed() < 2, reason="needs 2 CPUs to leave one idle")
def test_a_busy_process_beside_us_leaves_fewer_threads():
    monitor = threads.CpuMonitor()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        others = monitor.others_busy()
        idle = monitor.idle_cpus()
    finally:
        busy.kill()
        busy.wait()
    # One process spinning takes a whole CPU; other tests running beside only add to it.
    assert others >= 0.7
    assert idle <= threads.cpus_allowed() - 1
    assert monitor.describe().startswith(f"other work used {monitor.others:.2f} CPUs over ")
    assert monitor.others >= 0.7
    assert monitor.window_s >= 0.05
    choice = threads.choose("auto", threads.SMALL_CELLS * 10, threads.CpuMonitor())
    assert choice is not None
    assert 1 <= choice.threads <= threads.cpus_allowed()


class _Scripted(threads.CpuMonitor):
    """Other work as measured over each window, in order (the rule, not the kernel's counters)."""

    def __init__(self, *others: float) -> None:
        super().__init__()
        self.script = list(others)

    def others_busy(self) -> float:
        self.window_s = 3.0 if len(self.script) > 1 else 0.1
        return self.script.pop(0)


@pytest.mark.skipif(threads.cpus_allowed() != 2, reason="the rule on 2 CPUs")
def test_other_work_that_has_stopped_costs_no_threads_and_running_work_does():
    stopped = _Scripted(0.9, 0.0)  # busy during the last stage, idle now
    assert stopped.idle_cpus() == 2
    assert stopped.describe() == (
        "other work used 0.00 CPUs over 0.1 s (0.90 over the 3.0 s before: stopped since)"
    )
    running = _Scripted(0.9, 1.0)  # a process still computing
    assert running.idle_cpus() == 1
    assert running.describe() == "other work used 0.90 CPUs over 3.0 s"
    quiet = _Scripted(0.1)  # idle: no second sample
    assert quiet.idle_cpus() == 2
    assert quiet.script == []


def test_our_own_work_is_not_counted_as_others():
    monitor = threads.CpuMonitor()
    started = time.monotonic()
    while time.monotonic() - started < 0.5:  # this process keeps one CPU busy
        np.sqrt(np.arange(10_000.0))
    # What other tests do beside us may add; our own half second must not count as a CPU.
    assert monitor.others_busy() < threads.cpus_allowed()


def test_limited_sets_the_openmp_and_blas_pools():
    with threads.limited(threads.ThreadChoice(1, "test")):
        inside = {pool["user_api"]: pool["num_threads"] for pool in threadpool_info()}
    assert inside
    assert all(n == 1 for n in inside.values())
    with threads.limited(None):  # no choice: untouched
        pass


def test_limited_covers_a_stage_that_imports_sklearn_itself():
    # A fresh process (each `mlflow run` stage of runner=projects): scikit-learn's OpenMP
    # runtime is not loaded until the stage imports it, and HistGradientBoosting keeps the
    # count it fitted with in the model.
    code = (
        "import sys\n"
        "from mlflow_pipeline.engine import threads\n"
        "assert 'sklearn' not in sys.modules\n"
        "with threads.limited(threads.ThreadChoice(1, 'test')):\n"
        "    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads\n"
        "    print(_openmp_effective_n_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
