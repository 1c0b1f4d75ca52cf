"""Run the ```bash blocks of a docs page in order, in an empty directory, so the docs and the
code cannot drift apart. A block right after `<!-- not run in tests -->` is skipped (servers,
clusters, crontab); a command written `! cmd` must fail, every other command must succeed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, SCRUBBED_ENV, VENV_BIN

pytestmark = pytest.mark.slow

# Pages whose every block runs here: the cheapest ones to run fully (about a minute each).
PAGES = ("data-quality.md",)
SKIP_MARK = "<!-- not run in tests -->"
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```bash\n(?P<body>.*?)\n```", re.DOTALL)
BLOCK_TIMEOUT_S = 600


def bash_blocks(page: Path) -> list[str]:
    """The page's ```bash blocks in order, without those marked not to run in tests."""
    text = "\n" + page.read_text()
    return [m["body"] for m in BLOCK.finditer(text) if m["before"].strip() != SKIP_MARK]


def as_script(block: str) -> str:
    """A bash script that stops at the first command whose exit code is not the expected one."""
    lines = block.replace("\\\n", " ").splitlines()
    script = ["set -euo pipefail"]
    for line in lines:
        if line.startswith("! "):
            command = line[2:]
            script.append(f"if {command}; then echo {command!r} should have failed >&2; exit 1; fi")
        else:
            script.append(line)
    return "\n".join(script) + "\n"


def test_bash_blocks_are_found():
    blocks = bash_blocks(REPO / "docs" / "data-quality.md")
    assert blocks, "no ```bash block found"
    assert blocks[0].startswith("mlflow-pipeline example-data"), blocks[0]


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_runs_top_to_bottom(page: str, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    for number, block in enumerate(bash_blocks(REPO / "docs" / page), start=1):
        result = subprocess.run(
            ["bash", "-c", as_script(block)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
        assert result.returncode == 0, (
            f"{page}, bash block {number} exited {result.returncode}:\n{block}\n"
            f"--- stderr (end) ---\n{result.stderr[-4000:]}"
        )
