"""Ctrl-C inside a garbage-collector callback (where Python can only print it) is not lost: it
is raised again at the next checkpoint, and nothing is printed."""

from __future__ import annotations

import os
import signal
import time
import weakref

import pytest

from mlflow_pipeline import interrupt


class _Thing:
    pass


def _ctrl_c_inside_a_weakref_callback() -> None:
    """As when SIGINT arrives while SQLAlchemy's weakref cleanup runs: the handler's
    KeyboardInterrupt is raised inside the callback, where it cannot propagate."""
    thing = _Thing()
    ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT))
    del thing
    assert ref() is None


def test_a_ctrl_c_swallowed_by_a_callback_is_raised_at_the_next_checkpoint(capfd):
    with interrupt.watched():
        _ctrl_c_inside_a_weakref_callback()  # Python swallows the KeyboardInterrupt here
        with pytest.raises(KeyboardInterrupt):
            interrupt.checkpoint()
    assert "Exception ignored" not in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_new_watch_starts_clean_and_a_nested_one_keeps_the_outer_state():
    with interrupt.watched():
        _ctrl_c_inside_a_weakref_callback()
        with interrupt.watched():  # a sweep job's pipeline inside the sweep's
            with pytest.raises(KeyboardInterrupt):
                interrupt.checkpoint()
    with interrupt.watched():
        interrupt.checkpoint()  # the last run's Ctrl-C is not this one's


STORE_WRITE = """
def write():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.3)  # the write goes on, its transaction is not cut in half
    return "committed"
"""


def test_an_interrupt_inside_store_code_is_delivered_once_it_has_returned():
    namespace = {"__name__": "sqlalchemy.engine.stand_in", "os": os, "signal": signal}
    namespace["time"] = time
    exec(STORE_WRITE, namespace)
    results = []

    def write_then_wait() -> None:
        results.append(namespace["write"]())
        time.sleep(30)  # delivered again once the write returned: here, or as it returned

    with interrupt.watched(), pytest.raises(KeyboardInterrupt):
        write_then_wait()
    assert results == ["committed"]


def test_an_interrupt_deferred_as_the_block_ends_is_raised_there_and_never_again():
    """The store write was the block's last step: its deferred Ctrl-C had been delivered again
    after the block ended, raising in whatever ran next (a sweep's exit handler, mid-write,
    with a traceback). It is raised as the block ends, and nothing is delivered after."""
    namespace = {"__name__": "sqlalchemy.engine.stand_in", "os": os, "signal": signal}
    namespace["time"] = time
    exec(STORE_WRITE, namespace)
    with pytest.raises(KeyboardInterrupt):
        with interrupt.watched():
            assert namespace["write"]() == "committed"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    time.sleep(0.3)  # no redelivery lands here
    assert interrupt.requested()


@pytest.mark.parametrize("taken_by", ["checkpoint", "an error it became"])
def test_a_deferred_interrupt_taken_before_its_redelivery_is_not_raised_in_the_clean_up(
    taken_by: str, monkeypatch: pytest.MonkeyPatch
):
    """A checkpoint raised the Ctrl-C, or the runner caught the error it became, before its
    redelivery came: the redelivery had raised a second KeyboardInterrupt in the runner's
    clean-up, before the pipeline run was ended, and MLflow's exit handler then ended that run
    FINISHED (CI, once)."""
    namespace = {"__name__": "sqlalchemy.engine.stand_in", "os": os, "signal": signal}
    namespace["time"] = time
    exec(STORE_WRITE.replace("0.3", "0.0"), namespace)
    # Time enough to take it first on a loaded machine; the clean-up outlasts the redelivery.
    monkeypatch.setattr(interrupt, "REDELIVER_S", 0.5)
    cleaned_up = taken = False
    with interrupt.watched():
        try:
            assert namespace["write"]() == "committed"
            if taken_by == "checkpoint":
                interrupt.checkpoint()  # before the redelivery, 50 ms later
            raise AttributeError("what a library's finally raised in its place")
        except (KeyboardInterrupt, AttributeError) as exc:
            taken = interrupt.interrupted_by(exc)
            interrupt.acknowledge()  # as the runner does first
            try:
                time.sleep(3 * interrupt.REDELIVER_S)  # the clean-up: nothing lands here
            except KeyboardInterrupt:
                pytest.fail("the Ctrl-C was raised again in the clean-up")
            cleaned_up = True
    assert taken
    assert cleaned_up  # and the block's end did not raise it either: it was taken
    assert interrupt.requested()


def test_a_second_ctrl_c_in_the_clean_up_is_delivered():
    """Redeliveries of a Ctrl-C already raised are dropped; a second Ctrl-C (the user's, as the
    clean-up hangs on the store) is a new one: delivered once the store call returns."""
    namespace = {"__name__": "sqlalchemy.engine.stand_in", "os": os, "signal": signal}
    namespace["time"] = time
    exec(STORE_WRITE.replace("0.3", "0.0"), namespace)
    with interrupt.watched():
        try:
            namespace["write"]()
            interrupt.checkpoint()
        except KeyboardInterrupt:
            namespace["write"]()  # the second Ctrl-C, inside a store call of the clean-up
            with pytest.raises(KeyboardInterrupt):
                time.sleep(30)
