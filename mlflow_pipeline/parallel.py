"""numpy work on the threads a stage may use: how many, and a map over them that keeps order.

The engine limits each stage's native (OpenMP, BLAS) thread pools to the count it chose
(engine/threads.py); ``native_threads`` reads that limit back, so code of a lower layer can
split numpy work, which runs without the GIL, over as many Python threads and no more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def native_threads() -> int:
    """The threads the native (OpenMP) pools may use here: the count the pipeline chose for
    this stage, as threadpoolctl set it; 1 when none is loaded."""
    from threadpoolctl import threadpool_info

    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "openmp"]
    return max(1, min(counts)) if counts else 1


def ordered_map(
    func: Callable[[T], R], items: Iterable[T], threads: int, *, name: str = "numpy"
) -> list[R]:
    """``[func(item) for item in items]`` on up to ``threads`` threads, results in order.

    ``items`` is consumed lazily, one item ahead of each thread: a generator of large arrays
    (bootstrap weights) never has more than ``2 * threads`` of them in memory. The items are
    made in this thread in their order, so a random generator feeding them draws the same
    values whatever the thread count. An exception in ``func`` is raised here."""
    if threads <= 1:
        return [func(item) for item in items]
    results: list[R] = []
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) >= 2 * threads:
                    results.append(pending.popleft().result())
            results.extend(future.result() for future in pending)
        finally:
            for future in pending:
                future.cancel()
    return results
