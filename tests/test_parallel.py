"""numpy work on the stage's threads: the count read back from threadpoolctl, and a map that
keeps order, bounds what it holds and raises what a thread raised."""

from __future__ import annotations

import threading

import pytest
import sklearn  # noqa: F401  (loads the OpenMP runtime whose limit is read back)
from threadpoolctl import threadpool_limits

from mlflow_pipeline.parallel import native_threads, ordered_map


def test_native_threads_is_the_limit_the_engine_set():
    with threadpool_limits(1):
        assert native_threads() == 1
    with threadpool_limits(2):
        assert native_threads() == 2


def test_ordered_map_keeps_order_and_uses_the_threads():
    names = set()

    def square(x: int) -> int:
        names.add(threading.current_thread().name)
        return x * x

    assert ordered_map(square, range(50), 2, name="t") == [x * x for x in range(50)]
    assert names
    assert all(n.startswith("t_") for n in names)
    assert ordered_map(square, range(5), 1) == [0, 1, 4, 9, 16]


def test_ordered_map_takes_items_only_a_little_ahead():
    made, done = [], []

    def items():
        for i in range(40):
            made.append(i)
            # Never more than 2 x threads items made and not yet scored.
            assert len(made) - len(done) <= 2 * 2 + 1
            yield i

    def work(i: int) -> int:
        done.append(i)
        return i

    assert ordered_map(work, items(), 2) == list(range(40))


def test_an_error_in_a_thread_is_raised_here():
    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        ordered_map(fail_on_three, range(10), 2)
