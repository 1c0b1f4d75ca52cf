"""A human moves ``champion`` in the MLflow registry UI (a real browser), and the rest follows:
``score`` and ``serve`` of ``models:/customers@champion`` use the version they chose, and the
next pipeline run compares its challenger with that version."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import requests
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from mlflow_pipeline.registry.audit import current_user

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    VENV_BIN,
    Store,
    assert_ok,
    tail,
)
from .test_serve import FEATURES, Server, free_port, split_payload

pytestmark = pytest.mark.slow

CHAMPION_URI = f"models:/{CHAMPION_MODEL}@champion"
# A much weaker logistic regression than the champion's (C=1.0): the pipeline keeps it out.
WEAK_MODEL = "model.C=0.0001"
# Where the README's screenshot of the registry page is refreshed from, when set.
SCREENSHOT_DIR_ENV = "MLFLOW_PIPELINE_SCREENSHOT_DIR"
SCREENSHOT = "registry-ui.png"
AUDIT_SCREENSHOT = "audit-ui.png"
RUNS_SCREENSHOT = "runs-ui.png"
COMPARE_SCREENSHOT = "compare-ui.png"
# The test's pipeline runs, side by side in one experiment of their own.
EXPERIMENT = "customers-ui"
VIEWPORT = {"width": 1400, "height": 1000}
# Chromium as root in a container (STACK-NOTES); Playwright adds a fresh --user-data-dir.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_READY_TIMEOUT_S = 90
UI_TIMEOUT_MS = 30_000
# Every expectation waits as long (playwright's default, 5 s, is short for a loaded CI machine
# rendering the UI next to a model server and another test worker).
expect.set_options(timeout=UI_TIMEOUT_MS)


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium: a failure in CI (it must be installed), a skip on a developer's box.

    Session-scoped so that it is checked before the session's champion store is built.
    """
    found = shutil.which("chromium")
    if found:
        return Path(found)
    message = "chromium is missing: run `make browser` as root (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            launched.close()


class MlflowUi:
    """``mlflow ui`` over a store's SQLite database on a free loopback port, started with the
    README's (`make ui`) arguments; its output goes to files in the store."""

    def __init__(self, store: Store) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = store.root / "ui.out"
        self.err = store.root / "ui.err"
        env = store.env()
        env.pop("MLFLOW_TRACKING_URI")
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        args = [
            VENV_BIN / "mlflow",
            "ui",
            "--backend-store-uri",
            store.uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(args, cwd=store.root, env=env, stdout=out, stderr=err)

    def logs(self) -> str:
        return f"--- stdout\n{tail(self.out.read_text())}\n--- stderr\n{tail(self.err.read_text())}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + UI_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"mlflow ui exited early\n{self.logs()}"
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return
            except requests.RequestException:  # refused, or accepted but slow to answer
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow ui had no /health within {UI_READY_TIMEOUT_S} s\n{self.logs()}")

    def stop(self) -> None:
        """SIGTERM (it stops its uvicorn child); kill whatever is left."""
        if self.process.poll() is not None:
            return
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        for child in children:
            try:
                child.kill()
            except psutil.Error:
                pass


@pytest.fixture
def ui(champion_store: Store) -> Iterator[MlflowUi]:
    """``mlflow ui`` over ``champion_store``, started but not yet waited for (it boots while
    the test runs the pipeline)."""
    server = MlflowUi(champion_store)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def serving() -> Iterator[list[Server]]:
    """Every ``mlflow-pipeline serve`` the test starts is stopped at the end."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.kill()


# ---- steps --------------------------------------------------------------------------------


def pipeline(store: Store, *overrides: str) -> dict[str, Any]:
    """One pipeline run on customers.csv in EXPERIMENT; its promotion.json."""
    result = store.pipeline(
        *CHAMPION_OVERRIDES,
        f"data.path={store.root / CHAMPION_DATA}",
        f"tracking.experiment_name={EXPERIMENT}",
        *overrides,
    )
    assert_ok(result)
    experiment_id = store.client.get_experiment_by_name(EXPERIMENT).experiment_id
    (register,) = store.client.search_runs(
        [experiment_id],
        "tags.`pipeline.stage` = 'register'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return store.promotion(register.info.run_id)


def aliases_cell(page: Page, version: str) -> Locator:
    """The Aliases cell of a version's row in the model page's versions table (the page has
    other tables: the model's own tags). Waits for the table."""
    header = page.get_by_role("columnheader", name="Aliases", exact=True)
    # The UI keeps fetching in the background: "networkidle" never comes on a #/ route.
    expect(header).to_be_visible(timeout=UI_TIMEOUT_MS)
    table = page.get_by_role("table").filter(has=header)
    column = table.get_by_role("columnheader").all_inner_texts().index("Aliases")
    row = table.get_by_role("row").filter(
        has=page.get_by_role("link", name=f"Version {version}", exact=True)
    )
    return row.get_by_role("cell").nth(column)


def move_alias_in_ui(page: Page, ui_url: str, alias: str, version: str) -> dict[str, str]:
    """What a human does: the model's page, the pencil in the version's Aliases cell, type the
    alias and Enter, "Save aliases". Returns the request the browser sent."""
    page.goto(f"{ui_url}/#/models/{CHAMPION_MODEL}", wait_until="commit")
    aliases_cell(page, version).get_by_role("button").click()
    dialog = page.get_by_role("dialog", name=f"Add/Edit alias for model version {version}")
    expect(dialog).to_be_visible()
    aliases = dialog.get_by_role("combobox")
    aliases.fill(alias)
    aliases.press("Enter")
    # The UI warns that the alias leaves the version it was on.
    expect(dialog).to_contain_text(f'The "{alias}" alias is also being used on version')
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/mlflow/registered-models/alias")
    ) as sent:
        dialog.get_by_role("button", name="Save aliases").click()
    expect(dialog).to_be_hidden(timeout=UI_TIMEOUT_MS)
    response = sent.value.response()
    assert response is not None
    assert response.ok, response.text()
    return json.loads(sent.value.post_data or "{}")


def screenshot(page: Page, path: Path) -> None:
    """What the window shows (the top of the page), without the MLflow Assistant panel; also
    copied to $MLFLOW_PIPELINE_SCREENSHOT_DIR when set (the README's images)."""
    close = page.get_by_role("button", name="Close")  # the MLflow Assistant side panel
    if close.count() == 1:
        close.click()
        expect(close).to_have_count(0)
    page.screenshot(path=path)
    assert_real_screenshot(path)
    if os.environ.get(SCREENSHOT_DIR_ENV):
        target = Path(os.environ[SCREENSHOT_DIR_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.name)


def page_of_runs(browser: Browser, ui_url: str, experiment_id: str) -> Page:
    """The runs table of an experiment, loaded."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{ui_url}/#/experiments/{experiment_id}/runs", wait_until="commit")
    expect(page.get_by_role("columnheader", name="Run Name").first).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    return page


def show_columns(page: Page, *names: str) -> None:
    """In the runs table: "Columns", then each of ``names`` (a metric, a param or an attribute
    shown by default, which is then hidden) found by the column search and clicked."""
    page.get_by_role("button", name="Columns").click()
    chooser = page.get_by_role("dialog")
    search = chooser.get_by_placeholder("Search columns")
    for name in names:
        search.fill(name)
        chooser.get_by_text(name, exact=True).first.click()
    page.keyboard.press("Escape")


def assert_runs_compare(browser: Browser, ui_url: str, store: Store, tmp_path: Path) -> None:
    """The test's two pipeline runs in the runs list and the compare view: names that say
    what ran on what, the data each started from in the Dataset column (the second run reused
    ingest from the cache), the model's param and evaluate's metric on the pipeline runs, so
    the parallel coordinates plot relates one to the other."""
    experiment_id = store.client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = store.client.search_runs(
        [experiment_id], "tags.`pipeline.kind` = 'pipeline'", order_by=["attributes.start_time"]
    )
    assert [r.data.params["model.C"] for r in runs] == ["0.0001", "1.0"]
    page = page_of_runs(browser, ui_url, experiment_id)
    for run in runs:
        assert run.info.run_name.startswith("logistic_regression-customers-")
        expect(page.get_by_role("link", name=run.info.run_name, exact=True)).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
    raw = [i.dataset for i in runs[0].inputs.dataset_inputs]
    assert [(d.name, d.digest) for d in raw] == [
        (i.dataset.name, i.dataset.digest) for i in runs[1].inputs.dataset_inputs
    ]
    expect(page.get_by_text(f"raw ({raw[0].digest})", exact=True)).to_have_count(2)
    show_columns(page, "roc_auc", "model.C", "Source", "Models")
    for name in ("roc_auc", "model.C"):
        expect(page.get_by_role("columnheader", name=name, exact=True).first).to_be_visible()
    for run in runs:
        # ag-grid draws a row in parts (pinned name, scrolled columns), each with the run id.
        parts = page.locator(f'[role="row"][row-id="{run.info.run_id}"]')
        for value in (run.data.params["model.C"], str(run.data.metrics["roc_auc"])[:6]):
            expect(parts.filter(has_text=value)).to_have_count(1)
    screenshot(page, tmp_path / RUNS_SCREENSHOT)

    ids, experiments = json.dumps([r.info.run_id for r in runs]), json.dumps([experiment_id])
    page.goto(f"{ui_url}/#/compare-runs?runs={ids}&experiments={experiments}", wait_until="commit")
    expect(page.get_by_text("Comparing 2 Runs from 1 Experiment")).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    metrics = page.get_by_role("combobox").nth(1)  # the parallel coordinates plot's metrics
    metrics.click()  # editable once open
    metrics.fill("roc_auc")
    metrics.press("Enter")
    page.keyboard.press("Escape")
    plot = page.locator(".js-plotly-plot")
    for axis in ("model.C", "roc_auc"):
        expect(plot.get_by_text(axis, exact=True).first).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="model.C").first).to_contain_text("0.0001")
    screenshot(page, tmp_path / COMPARE_SCREENSHOT)
    page.close()


def assert_real_screenshot(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width == VIEWPORT["width"]
        assert image.height == VIEWPORT["height"]
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) blank"
    assert path.stat().st_size > 30_000


def assert_score_uses(store: Store, rows: pd.DataFrame, model: Any, version: str) -> None:
    """``mlflow-pipeline score models:/customers@champion`` predicts with ``version``."""
    source, scored = store.root / "rows.csv", store.root / "scored.csv"
    rows.to_csv(source, index=False)
    result = store.run(
        VENV_BIN / "mlflow-pipeline", "score", CHAMPION_URI, "--input", source, "--output", scored
    )
    assert_ok(result)
    assert f"with {CHAMPION_MODEL} v{version} ({CHAMPION_URI})" in result.stdout
    output = pd.read_csv(scored)
    assert set(output["model_version"]) == {int(version)}
    assert output["prediction"].tolist() == model.predict(rows[FEATURES]).tolist()
    np.testing.assert_allclose(
        output[["proba_0", "proba_1"]].to_numpy(), model.predict_proba(rows[FEATURES]), rtol=1e-12
    )


def assert_serve_uses(server: Server, rows: pd.DataFrame, model: Any, version: str) -> None:
    """``mlflow-pipeline serve models:/customers@champion`` says it serves ``version`` and
    answers like it; it stops on SIGTERM."""
    server.wait_ready()
    served = f"models:/{CHAMPION_MODEL}/{version}"
    assert f"serving {CHAMPION_MODEL} v{version} ({CHAMPION_URI} -> {served})" in (
        server.out.read_text()
    )
    status, answer = server.post(split_payload(rows[FEATURES]))
    assert status == 200, answer
    assert answer["predictions"] == model.predict(rows[FEATURES]).tolist()
    assert server.stop() == 128 + signal.SIGTERM, server.logs()


# ---- the test -----------------------------------------------------------------------------


def test_champion_moved_in_the_ui_is_what_score_serve_and_the_next_run_use(
    chromium: Path,  # first: a missing browser skips (fails in CI) before any store is built
    champion_store: Store,
    ui: MlflowUi,
    browser: Browser,
    serving: list[Server],
    tmp_path: Path,
):
    store = champion_store
    # Version 2: a weaker challenger, which the pipeline does not promote.
    weak = pipeline(store, WEAK_MODEL)
    assert weak["promote"] is False, weak["reason"]
    assert (weak["version"], weak["champion_version"]) == ("2", "1")
    assert store.alias(CHAMPION_MODEL, "champion") == "1"
    assert store.alias(CHAMPION_MODEL, "challenger") == "2"

    # A human looks at the registry and moves champion to version 2 anyway.
    ui.wait_ready()
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{ui.url}/#/models/{CHAMPION_MODEL}", wait_until="commit")
    expect(aliases_cell(page, "1")).to_contain_text("champion")
    expect(aliases_cell(page, "2")).to_contain_text("challenger")
    expect(aliases_cell(page, "2")).not_to_contain_text("champion")

    sent = move_alias_in_ui(page, ui.url, "champion", "2")

    assert sent == {"name": CHAMPION_MODEL, "alias": "champion", "version": "2"}
    # The table does not refetch after "Save aliases" (MLflow 3.17): a human reloads the page.
    page.reload(wait_until="commit")
    expect(aliases_cell(page, "2")).to_contain_text("champion", timeout=UI_TIMEOUT_MS)
    expect(aliases_cell(page, "2")).to_contain_text("challenger")
    expect(aliases_cell(page, "1")).not_to_contain_text("champion")
    model = store.client.get_registered_model(CHAMPION_MODEL)
    assert {a: str(v) for a, v in model.aliases.items()} == {"champion": "2", "challenger": "2"}

    screenshot(page, tmp_path / SCREENSHOT)
    page.close()

    # What the rest uses is the human's choice; among these rows versions 1 and 2 disagree.
    chosen = store.load_model(CHAMPION_MODEL, "2")
    previous = store.load_model(CHAMPION_MODEL, "1")
    rows = pd.read_csv(store.root / CHAMPION_DATA).drop(columns=["label"]).iloc[:60]
    assert (chosen.predict(rows[FEATURES]) != previous.predict(rows[FEATURES])).any()
    server = Server(store, free_port())  # boots while score runs
    serving.append(server)
    assert_score_uses(store, rows, chosen, "2")
    assert_serve_uses(server, rows, chosen, "2")

    # The next run, with the first champion's config, is compared with version 2.
    weak_score = float(
        store.client.get_model_version(CHAMPION_MODEL, "2").tags["promotion.challenger_score"]
    )
    nxt = pipeline(store)
    # The same config on the same data makes the same model as v1, byte for byte: it is not
    # registered again; v1 is the challenger.
    assert nxt["version"] == "1", nxt["reason"]
    assert nxt["registered"] is False
    assert nxt["duplicate_of"]["version"] == "1"
    assert nxt["champion_version"] == "2", nxt["reason"]
    assert nxt["champion_score"] == pytest.approx(weak_score)
    assert "champion v2" in nxt["reason"]
    assert len(store.versions(CHAMPION_MODEL)) == 2
    # v1 scores higher than the human's v2, but not beyond the noise of 60 test rows (the
    # paired bootstrap interval includes 0): the human's champion stays.
    assert nxt["promote"] is False, nxt["reason"]
    assert "beyond the noise" in nxt["reason"]
    assert store.alias(CHAMPION_MODEL, "champion") == "2"
    assert store.alias(CHAMPION_MODEL, "rollback") is None

    # The audit trail: the human's move, found and recorded by that run, between the moves the
    # pipeline made; in `mlflow-pipeline audit` and in the UI as the audit experiment's runs.
    assert nxt["moved_outside"] == ["champion: v1 -> v2"]
    audit = store.run(VENV_BIN / "mlflow-pipeline", "audit", CHAMPION_MODEL)
    assert_ok(audit)
    moves = [line.split()[2:7] for line in audit.stdout.splitlines()[1:-1]]
    assert moves[:4] == [
        ["challenger", "none", "v1", "pipeline", current_user()],
        ["champion", "none", "v1", "pipeline", current_user()],
        ["challenger", "v1", "v2", "pipeline", current_user()],
        ["champion", "v1", "v2", "external", "unknown"],
    ], audit.stdout
    assert all(move[0] == "challenger" for move in moves[4:]), audit.stdout
    audit_experiment = store.client.get_experiment_by_name(f"{CHAMPION_MODEL}-audit")
    page = page_of_runs(browser, ui.url, audit_experiment.experiment_id)
    for title in ("champion: none -> v1", "champion: v1 -> v2"):
        expect(page.get_by_role("link", name=title, exact=True)).to_be_visible()
    screenshot(page, tmp_path / AUDIT_SCREENSHOT)
    page.close()

    assert_runs_compare(browser, ui.url, store, tmp_path)
