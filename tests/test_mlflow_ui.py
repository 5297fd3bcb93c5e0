"""A sweep as MLflow's own UI shows it: job names that say what differs, descriptions,
the parent's comparison table and its link to MLflow's compare page. Checked in a real
browser (the system's Chromium) against a real `mlflow ui` on the default store and a
real `mlflow server`, after a real (tiny) `-m experiment=mlp_vs_cnn` sweep; the pure
helpers (reporting.describe) directly.

Screenshots go to the test's temporary folder (`*.png`), to look at."""

from __future__ import annotations

import json
import math
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from mlflow.tracking import MlflowClient

from digit_experiments.app.sweep import SWEEP_BEST, renamed, sweep_name
from digit_experiments.reporting import describe

from .browser import TIMEOUT_MS, chromium, close_mlflow_assistant, expect, mlflow_compare_metric
from .conftest import mlflow_process, run_cli

QUICK = ["data.train_limit=1000", "data.test_limit=200", "trainer.epochs=1"]
SWEEP = ["-m", "experiment=mlp_vs_cnn", "tracking.log_model=false", *QUICK]
PARENT_NAME = (
    "sweep experiment=mlp_vs_cnn model=mlp,cnn tracking.log_model=false "
    "data.train_limit=1000 data.test_limit=200 trainer.epochs=1"
)


# --- the pure helpers ------------------------------------------------------------------


def _row(job, model, accuracy, status="FINISHED", overrides=None, **more):
    return {
        "job": job,
        "status": status,
        "overrides": overrides or f"model={model} data.train_limit=1000",
        "model": model,
        "optimizer": "adam",
        "regularization": "none" if model == "mlp" else "dropout",
        "test_accuracy": accuracy,
        "test_f1_macro": accuracy and accuracy - 0.001,
        "best_val_accuracy": accuracy,
        "epochs": 10,
        "seconds": 168.0,
        "run_id": f"{job:032d}",
        **more,
    }


def test_links_are_relative_for_a_local_store_and_absolute_for_a_server():
    assert describe.ui_base("sqlite:////tmp/mlflow.db") == ""
    assert describe.ui_base("file:///tmp/mlruns") == ""
    assert describe.ui_base("postgresql://u:p@db/mlflow") == ""
    # A server's address, without the credentials a tracking URI may carry.
    assert describe.ui_base("http://user:secret@127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert describe.ui_base("https://mlflow.example/prefix/") == "https://mlflow.example/prefix"

    assert describe.run_url("", "3", "abc").startswith("#/experiments/3/runs/abc?")
    url = describe.compare_url("http://h:5000", ["a", "b"], ["3", "3"])
    assert url.startswith("http://h:5000/#/compare-runs?")
    query = parse_qs(urlsplit(url.split("#", 1)[1]).query)
    # What MLflow's UI reads: JSON lists, as its own "Compare" button writes them.
    assert json.loads(query["runs"][0]) == ["a", "b"]
    assert json.loads(query["experiments"][0]) == ["3"]
    assert not set("[]\"' ()") & set(url)  # nothing that would end a Markdown link


def test_names_say_what_differs_within_the_group():
    rows = [_row(0, "mlp", 0.98), _row(1, "cnn", 0.99)]
    differs = describe.differing(rows)
    assert differs == {0: ["model=mlp"], 1: ["model=cnn"]}
    assert describe.common(rows) == ["data.train_limit=1000"]
    assert renamed("mlp-adam-none #0", differs[0], 0) == "mlp #0"
    assert renamed("job #1 (refused)", ["trainer.epochs=0"], 1) == "epochs=0 #1 (refused)"
    assert renamed("cnn-adam-dropout #2 (reused)", [], 2) == "cnn-adam-dropout #2 (reused)"
    # An Optuna trial: its values, short; a key's last part unless two would read alike.
    trial = ["optimizer.learning_rate=0.0012345678", "trainer.batch_size=64", "a.l2=1", "b.l2=2"]
    assert describe.label(trial) == "learning_rate=0.00123 batch_size=64 a.l2=1 b.l2=2"
    # Values with spaces (choice(32, 64)) stay one override.
    assert describe.split_overrides("x=choice(32, 64) model=cnn") == [
        "x=choice(32, 64)",
        "model=cnn",
    ]


def test_sweep_names_include_what_a_preset_sweeps():
    assert sweep_name(["trainer.epochs=1", "model=mlp,cnn"]) == (
        "sweep model=mlp,cnn trainer.epochs=1"
    )
    assert (
        sweep_name(
            ["experiment=mlp_vs_cnn", "tracking.log_model=false", *QUICK], {"model": "mlp,cnn"}
        )
        == PARENT_NAME
    )
    assert sweep_name(["trainer.epochs=1"]) == "sweep trainer.epochs=1"
    assert sweep_name([]) == "sweep (defaults)"


def test_sweep_names_tell_apart_sweeps_of_the_same_values():
    seeds = "trainer.seed=1,2,3"
    assert sweep_name(["experiment=best_cnn", "trainer.epochs=60", seeds]) == (
        f"sweep experiment=best_cnn {seeds} trainer.epochs=60"
    )
    # A list value is one value, as Hydra reads it; a quoted comma is no sweep either.
    kernels = "model.kernel_size=[7,3]"
    assert sweep_name(["experiment=best_cnn", kernels, seeds]) == (
        f"sweep experiment=best_cnn {seeds} {kernels}"
    )
    assert sweep_name(["+note='a,b'", "x=range(1,3)", "y=choice(32, 64)"]) == (
        "sweep x=range(1,3) y=choice(32, 64) +note='a,b'"
    )
    # How the sweep reaches its store is not what it is.
    assert sweep_name(["model=mlp,cnn", "tracking.uri=http://127.0.0.1:5000"]) == (
        "sweep model=mlp,cnn"
    )


def test_a_run_is_described_in_one_line():
    cnn = _row(1, "cnn", 0.9922)
    assert describe.run_line(cnn) == (
        "cnn, adam, dropout: 99.22% test accuracy, macro F1 0.9912, 10 epochs, 2.8 min"
    )
    # Refused before its run recorded its options: its overrides say what it was.
    failed = _row(2, None, None, "FAILED", "trainer.epochs=0", optimizer=None, regularization=None)
    assert describe.run_line(failed, ["trainer.epochs=0"], "ConfigError: bad\n  epochs") == (
        "epochs=0: FAILED: ConfigError: bad epochs"  # the message on one line
    )
    line = describe.member_line(cnn, ["model=cnn"], None, "sweep a_b", "#/x", True)
    assert line.endswith("(job #1 of [sweep a\\_b](#/x), the best)")


def test_a_long_summary_keeps_the_best_rows_within_what_a_tag_holds():
    rows = [
        _row(i, "cnn", 0.9 + i / 1000, overrides=f"model=cnn optimizer.learning_rate={i}e-4")
        for i in range(120)
    ]
    names = {r["run_id"]: f"learning_rate={r['job']}e-4 #{r['job']}" for r in rows}
    text = describe.summary(rows, names, "1", "http://h:5000", rows[-1])
    assert len(text) <= describe.MAX_NOTE
    assert "more jobs: see `comparison/jobs.md`" in text
    assert "**[learning\\_rate=119e-4 #119]" in text  # the best is among those shown
    assert "| [learning\\_rate=0e-4 #0]" not in text  # the worst is not


# --- in a real browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    with chromium() as found:
        yield found


def _sweep(root, *extra):
    result = run_cli(*SWEEP, *extra, cwd=root, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]


def _sweep_runs(uri: str):
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("mlp-vs-cnn").experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: int(r.data.tags["hydra_job_num"]),
    )
    return parent, children


def _check_the_store(parent, children, link_base: str) -> None:
    """Names, descriptions and metrics, as the UI will read them. `link_base`: what the
    links start with ("": relative)."""
    assert parent.info.run_name == PARENT_NAME
    assert [c.info.run_name for c in children] == ["mlp #0", "cnn #1"]
    # The parent's only metric is the one to chart across sweeps; counts are tags.
    assert set(parent.data.metrics) == {SWEEP_BEST}
    assert parent.data.tags["jobs_total"] == "2" and parent.data.tags["jobs_failed"] == "0"
    best = max(children, key=lambda c: c.data.metrics["test_accuracy"])
    assert parent.data.metrics[SWEEP_BEST] == best.data.metrics["test_accuracy"]
    note = parent.data.tags[describe.NOTE_TAG]
    experiment_id = parent.info.experiment_id
    for child in children:
        assert f"]({describe.run_url(link_base, experiment_id, child.info.run_id)})" in note
        line = child.data.tags[describe.NOTE_TAG]
        model = child.data.tags["model"]
        assert line.startswith(f"{model}, adam, ")
        assert f"{100 * child.data.metrics['test_accuracy']:.2f}% test accuracy, " in line
        assert f"(job #{child.data.tags['hydra_job_num']} of [sweep experiment=mlp\\_vs" in line
    assert f"**[{best.info.run_name}](" in note


def _shown_as_mlflow_does(value: float) -> str:
    """A metric as MLflow's compare page writes it (Utils.formatMetric, below 10:
    Math.round(1e3 * v) / 1e3, then JavaScript's shortest form, as Python's repr)."""
    return repr(math.floor(1000 * value + 0.5) / 1000)


def _check_in_the_browser(browser, base, link_base, parent, children, shots, name) -> None:
    """The parent's page (the UI at `base`) shows the table of both jobs in its
    description; its link opens MLflow's compare page with both jobs: their names and test
    accuracies. Then the sweep's chart view. Screenshots: `shots`/`name`-*.png."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    experiment_id = parent.info.experiment_id
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parent.info.run_id}")
    expect(page.get_by_text(PARENT_NAME).first).to_be_visible()
    close_mlflow_assistant(page)
    table = page.locator("table").filter(has_text="overrides that differ")
    expect(table).to_be_attached()  # the description is there (folded or not)
    more = page.get_by_text("Show more", exact=True)  # a long description is folded
    if more.count():
        more.click()
    expect(table).to_be_visible()
    for child in children:
        row = table.get_by_role("row").filter(has_text=child.info.run_name)
        expect(row).to_contain_text(f"{100 * child.data.metrics['test_accuracy']:.2f}%")
        expect(row).to_contain_text("FINISHED")
        link = row.get_by_role("link", name=child.info.run_name)
        href = link.get_attribute("href")
        assert f"#/experiments/{experiment_id}/runs/{child.info.run_id}?" in href
    table.scroll_into_view_if_needed()
    page.screenshot(path=shots / f"{name}-parent.png", full_page=True)

    compare_link = page.get_by_role("link", name=describe.COMPARE_TEXT)
    href = compare_link.get_attribute("href")
    assert href.startswith(f"{link_base}/#/compare-runs?" if link_base else "#/compare-runs?")
    with context.expect_page() as opened:  # MLflow opens a description's links in a new tab
        compare_link.click()
    compare = opened.value
    expect(compare.get_by_text(f"Comparing {len(children)} Runs from 1 Experiment")).to_be_visible()
    assert json.loads(unquote(compare.url).split("runs=", 1)[1].split("&", 1)[0]) == [
        c.info.run_id for c in children
    ]
    names = compare.get_by_role("row").filter(has_text="Run Name:").get_by_role("cell")
    expect(names).to_have_count(len(children))
    shown = dict(zip(names.all_inner_texts(), mlflow_compare_metric(compare, "test_accuracy")))
    assert shown == {
        c.info.run_name: _shown_as_mlflow_does(c.data.metrics["test_accuracy"]) for c in children
    }
    close_mlflow_assistant(compare)
    compare.screenshot(path=shots / f"{name}-compare.png", full_page=True)

    # The sweep's chart view, its row expanded: the jobs' metrics side by side, the
    # legends say which job is which.
    page.goto(
        f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        "&compareRunsMode=CHART"
    )
    sweep_row = page.get_by_role("row").filter(has_text=PARENT_NAME)
    sweep_row.get_by_role("button").first.click()  # the row's "+" shows its children
    page.get_by_placeholder("Search metric charts").fill("test_accuracy")
    card = page.locator("[data-testid='experiment-view-compare-runs-card']").filter(
        has=page.get_by_text("test_accuracy", exact=True)
    )
    for child in children:
        expect(card).to_contain_text(child.info.run_name)
    page.screenshot(path=shots / f"{name}-charts.png", full_page=True)
    context.close()


def test_mlflow_ui_on_the_default_store_leads_from_the_sweep_to_the_comparison(tmp_path, browser):
    # As a new user: the sweep into the default store (./mlflow.db), then `mlflow ui`
    # where it was run. The UI's address is not known to the sweep: relative links.
    _sweep(tmp_path)
    parent, children = _sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    _check_the_store(parent, children, "")
    with mlflow_process("ui", cwd=tmp_path) as base:
        _check_in_the_browser(browser, base, "", parent, children, tmp_path, "ui")


def test_a_tracking_server_s_sweep_links_to_the_server(tmp_path, browser):
    # The jobs log to a tracking server, which serves the UI too: links carry its
    # address, so they work from anywhere (the jobs.md artifact, a notebook, a message).
    with mlflow_process(
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
        cwd=tmp_path,
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    ) as base:
        _sweep(tmp_path, f"tracking.uri={base}")
        parent, children = _sweep_runs(base)
        _check_the_store(parent, children, base)
        _check_in_the_browser(browser, base, base, parent, children, tmp_path, "server")
