"""How many threads a stage's native code (OpenMP, BLAS) may use: chosen, not inherited.

scikit-learn's OpenMP and BLAS pools start one thread per core. On a machine where another
process keeps a core busy, those threads wait for each other at every barrier: a
HistGradientBoosting fit on 1,461 rows took 3.9 s with 2 threads against 0.7 s with 1 on this
2-core machine with one CPU-bound process beside it, and 7.1 s against 4.6 s at 100k rows
(docs/benchmarks.md has the full measurements). So each stage gets ``runner.threads``:

- ``auto`` (the default): one thread for a small input (below ``SMALL_CELLS`` values, where
  a second thread costs more than it brings even on an idle machine), else as many as there
  are CPUs this process may use that other processes have left idle since the pipeline
  started (or the previous stage), measured from the kernel's CPU counters minus this
  process's own CPU time, and confirmed by a fresh 0.1 s sample when that says some are
  busy (a burst that has stopped costs no threads); never fewer than one.
- a number: exactly that many.

The choice is recorded on the stage run (``threads`` param), so ``reproduce`` can use the
same count; estimators whose result depends on it (BLAS reductions) then stay bit-identical.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

# rows x columns of a stage's input frames below which one thread is used whatever the
# machine's state: HistGradientBoosting on 50k x 32 values or less is faster single-threaded
# even on an idle 2-core machine (docs/benchmarks.md, "Threads").
SMALL_CELLS = 1_600_000
# A measuring window shorter than this says nothing; a short sample is taken instead.
MIN_WINDOW_S = 0.05
SAMPLE_S = 0.1


def cpus_allowed() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU quota if any."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


@dataclass
class _Snapshot:
    at: float
    busy_s: float  # every CPU's non-idle time, seconds
    own_s: float  # this process's CPU time, seconds
    steal_s: float  # time the hypervisor gave this machine's CPUs to other machines


class CpuMonitor:
    """How busy the other processes keep the machine, between two calls of ``idle_cpus``."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._last = self._snapshot()
        # What the last measurement saw, for the log: seconds measured, CPUs' worth of steal.
        self.others = self.window_s = self.steal = 0.0
        self.earlier: tuple[float, float] | None = None  # what a fresh sample overruled

    def _snapshot(self) -> _Snapshot:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        own = self._process.cpu_times()
        return _Snapshot(
            time.monotonic(),
            sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0),
            own.user + own.system + own.children_user + own.children_system,
            getattr(times, "steal", 0.0),
        )

    def others_busy(self) -> float:
        """CPUs' worth of work done by other processes since the last call (or creation)."""
        now = self._snapshot()
        if now.at - self._last.at < MIN_WINDOW_S:
            time.sleep(SAMPLE_S)
            now = self._snapshot()
        window = now.at - self._last.at
        others = (now.busy_s - self._last.busy_s) - (now.own_s - self._last.own_s)
        others = max(0.0, others / window)
        steal = (now.steal_s - self._last.steal_s) / window
        self.window_s, self.steal = window, min(max(0.0, steal), others)
        self._last = now
        return others

    def idle_cpus(self) -> int:
        """The CPUs this process may use that others left idle (at least one).

        When other work kept CPUs busy since the last call, a fresh sample (``SAMPLE_S``)
        confirms it is still running: a burst that has stopped (kernel or hypervisor work, a
        short process) must not cost a long stage its threads. Another process that computes
        shows in both."""
        allowed = cpus_allowed()
        self.others = self.others_busy()
        self.earlier = None
        idle = _idle(allowed, self.others)
        if idle < allowed:
            earlier = (self.others, self.window_s, self.steal)
            now = self.others_busy()  # the window is new: a sample of SAMPLE_S
            if _idle(allowed, now) > idle:
                self.others, self.earlier = now, earlier[:2]
                return _idle(allowed, now)
            self.others, self.window_s, self.steal = earlier  # confirmed: say what decided
        return idle

    def describe(self) -> str:
        """What the last ``idle_cpus`` saw, e.g. "other work used 0.71 CPUs over 3.5 s"."""
        text = f"other work used {self.others:.2f} CPUs over {self.window_s:.1f} s"
        if self.steal >= 0.05:
            text += f", {self.steal:.2f} of them taken by the hypervisor (steal)"
        if self.earlier is not None:
            others, window = self.earlier
            text += f" ({others:.2f} over the {window:.1f} s before: stopped since)"
        return text


def _idle(allowed: int, others: float) -> int:
    return max(1, min(allowed, int(allowed - others + 0.5)))


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    why: str


def choose(setting: Any, cells: int, monitor: CpuMonitor | None) -> ThreadChoice | None:
    """The thread count for a stage whose input frames hold ``cells`` values; None: leave the
    libraries' own defaults (a stage with no frame input, e.g. ingest)."""
    if setting not in (None, "auto"):
        return ThreadChoice(int(setting), "runner.threads")
    if cells == 0:
        return None
    if cells < SMALL_CELLS:
        return ThreadChoice(1, f"{cells:,} values: small input")
    if monitor is None:
        return ThreadChoice(cpus_allowed(), "CPUs allowed")
    idle = monitor.idle_cpus()
    return ThreadChoice(idle, f"{idle} of {cpus_allowed()} CPUs idle: {monitor.describe()}")


@contextmanager
def limited(choice: ThreadChoice | None) -> Iterator[None]:
    """OpenMP and BLAS pools limited to ``choice.threads`` inside the block."""
    if choice is None:
        yield
        return
    # threadpoolctl limits the pools already loaded. scikit-learn loads its OpenMP runtime and
    # BLAS when imported; a stage importing it inside its function (as each `mlflow run` of
    # runner=projects does) would otherwise fit with every core while recording one thread,
    # and HistGradientBoosting keeps that count in the model (the content digest differed).
    import sklearn  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=choice.threads):
        yield


def frame_cells(values: dict[str, Any]) -> int:
    """rows x columns summed over the DataFrames among ``values``."""
    return sum(
        int(v.shape[0]) * int(v.shape[1])
        for v in values.values()
        if hasattr(v, "shape") and len(getattr(v, "shape", ())) == 2
    )
