"""Testing aid: kill this process with SIGKILL at a named point of a promotion, as a crash,
the OOM killer or a lost machine would, to prove that the next run ends in the same state.

``MLFLOW_PIPELINE_FAILPOINT=promotion.<point>`` (the variable engine.stage reads for its own
``<stage>[:<n>]`` points; names here never match a stage's). The points, in order:
``promotion.locked``, ``promotion.registered``, ``promotion.planned``, then per alias moved
``promotion.moved.<alias>``, ``promotion.recording.<alias>`` (its audit run created, not
finished) and ``promotion.recorded.<alias>``, and ``promotion.done`` (every move made and
recorded, the plan not yet cleared).
"""

from __future__ import annotations

import os
import signal

from mlflow_pipeline.tags import Env

PREFIX = "promotion."


def failpoint(name: str) -> None:
    """SIGKILL this process when ``MLFLOW_PIPELINE_FAILPOINT`` names this point."""
    if os.environ.get(Env.FAILPOINT) == PREFIX + name:
        os.kill(os.getpid(), signal.SIGKILL)
