"""The tracking layer on its own terms: runs through explicit clients (a caller's active
run is left alone), the parent run passed as a value, searches that follow every page,
and the small guarantees around a run (one log filter, an honest thread cap)."""

from __future__ import annotations

import logging
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from digit_experiments import cli
from digit_experiments.app.run import train
from digit_experiments.core import evaluate, training
from digit_experiments.core.config import validate
from digit_experiments.reporting import compare
from digit_experiments.tracking import search

from .conftest import clean_env, compose_cfg, run_cli, small_cfg

TINY = ["model=mlp", "data.train_limit=500", "data.test_limit=100", "trainer.epochs=1"]


# --- a caller's own MLflow run --------------------------------------------------------


def test_runs_started_inside_a_callers_run_nest_under_it_and_leave_it_alone(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("notebook")
    cfg = small_cfg(tmp_path, *TINY[:1], "tracking.log_model=false")
    with mlflow.start_run(run_name="notebook") as outer:
        train(cfg, output_dir=tmp_path / "ok")
        assert mlflow.active_run().info.run_id == outer.info.run_id

        def boom(*args, **kwargs):
            raise RuntimeError("disk on fire")

        with monkeypatch.context() as mp:
            mp.setattr(evaluate, "classification_metrics", boom)
            with pytest.raises(RuntimeError, match="disk on fire"):
                train(cfg, output_dir=tmp_path / "failed")
        assert mlflow.active_run().info.run_id == outer.info.run_id
        mlflow.log_param("still_mine", "yes")  # the caller's run still takes what it logs
    client = MlflowClient(uri)
    notebook = client.get_run(outer.info.run_id)
    assert notebook.info.status == "FINISHED" and notebook.data.params["still_mine"] == "yes"
    children = search.all_runs(
        client,
        [experiment.experiment_id],
        f"tags.`{search.PARENT_TAG}` = '{outer.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    assert [c.info.status for c in children] == ["FINISHED", "FAILED"]
    mlflow.set_experiment("Default")


# --- the parent run as a value --------------------------------------------------------


def test_a_run_whose_parent_is_not_in_its_store_is_refused_in_one_line(tmp_path):
    missing = "0123456789abcdef0123456789abcdef"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_cli(
        *TINY, f"tracking.parent_run_id='{missing}'", f"tracking.uri={uri}", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"digits-train: tracking.parent_run_id: parent run {missing} is not in {uri}"
    ), last
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    assert search.all_runs(client, ids) == []  # not silently a top-level run


def test_a_multirun_job_without_the_sweep_callback_says_it_has_no_parent(tmp_path):
    result = run_cli("-m", "~hydra.callbacks.mlflow_sweep", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = (result.stdout + result.stderr).splitlines()
    warned = [ln for ln in output if "has no parent run" in ln]
    assert len(warned) == 1 and "recorded as a top-level run" in warned[0]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = search.all_runs(client, ["1"])
    assert search.PARENT_TAG not in run.data.tags


# --- searches follow every page -------------------------------------------------------


@pytest.fixture
def many_runs(tmp_path, monkeypatch):
    """A sweep parent with 5 finished children that logged a metric, and pages of 2."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("many", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment, tags={"sweep": "true"}, run_name="sweep")
    for job in range(5):
        child = client.create_run(
            experiment,
            tags={search.PARENT_TAG: parent.info.run_id, "hydra_job_num": str(job)},
        )
        client.log_metric(child.info.run_id, "test_accuracy", 0.9 + job / 100)
        client.set_terminated(child.info.run_id)
    monkeypatch.setattr(search, "PAGE_SIZE", 2)
    return uri, client, experiment, client.get_run(parent.info.run_id)


def test_a_search_follows_every_page(many_runs):
    uri, client, experiment, parent = many_runs
    pages = []
    original = client.search_runs

    def counted(*args, **kwargs):
        pages.append(kwargs.get("page_token"))
        return original(*args, **kwargs)

    client.search_runs = counted
    assert len(search.all_runs(client, [experiment])) == 6
    assert len(pages) == 3 and pages[0] is None


def test_runs_rank_best_first_losses_lowest_and_test_slices_after_the_whole_test_set(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("rank", artifact_location=(tmp_path / "a").as_uri())
    runs = {}
    # name: (test_accuracy, val_loss, data.test_limit)
    for name, (accuracy, loss, limit) in {
        "whole_good": (0.995, 0.03, None),
        "whole_weak": (0.990, 0.02, None),
        "slice_perfect": (1.0, 0.01, 500),
        "slice_weak": (0.95, 0.2, 500),
    }.items():
        run = client.create_run(experiment, run_name=name)
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        client.log_metric(run.info.run_id, "val_loss", loss)
        client.log_param(run.info.run_id, "data.test_limit", str(limit))
        runs[name] = run.info.run_id
    client.create_run(experiment, run_name="no_metrics")
    found = search.all_runs(client, [experiment])

    def names(ranked):
        return [r.info.run_name for r in ranked]

    assert names(search.best_first(found, "test_accuracy")) == [
        "whole_good",
        "whole_weak",
        "slice_perfect",
        "slice_weak",
    ]
    # Not a test metric: the slice does not matter; a loss is best when lowest.
    assert names(search.best_first(found, "val_loss")) == [
        "slice_perfect",
        "whole_weak",
        "whole_good",
        "slice_weak",
    ]
    assert search.best_first(found, "no_such_metric") == []


def test_compare_and_sweep_tables_show_every_run_beyond_a_page(many_runs, capsys):
    uri, client, experiment, parent = many_runs
    assert [r["job"] for r in compare.sweep_rows(client, parent)] == [0, 1, 2, 3, 4]
    code = cli.main(["--tracking-uri", uri, "compare", "--experiment", "many"])
    table = capsys.readouterr().out.splitlines()
    assert code == 0 and len(table) == 2 + 5  # title, header, the 5 jobs (not the parent)

    from digit_experiments.inference import registry

    assert len(registry.candidate_runs(client, parent=parent.info.run_id)) == 5


# --- small guarantees -----------------------------------------------------------------


def test_the_legacy_h5_log_filter_is_added_once_per_process(tmp_path):
    conf = validate(compose_cfg())
    for _ in range(3):  # three jobs of a sweep in one process
        training.callbacks(conf, tmp_path / "model.h5")
    filters = [f for f in logging.getLogger("absl").filters if type(f).__name__ == "_QuietLegacyH5"]
    assert len(filters) == 1


def test_a_thread_cap_that_cannot_be_applied_is_not_reported_as_applied():
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "from digit_experiments.core import training\n"
        "import tensorflow as tf\n"
        "print('first', training.limit_threads(1))\n"
        "tf.constant(1.0) + 1.0  # TensorFlow starts its thread pools\n"
        "print('same', training.limit_threads(1))\n"
        "print('other', training.limit_threads(2))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean_env(), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    assert "first True" in lines and "same True" in lines and "other False" in lines
    assert "TensorFlow limited to 1 threads" in lines
    assert "TensorFlow limited to 2 threads" not in lines
    assert any(line.startswith("could not limit TensorFlow to 2 threads") for line in lines)
