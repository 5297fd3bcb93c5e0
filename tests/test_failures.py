"""A run that fails or is interrupted ends FAILED or KILLED, with what exists logged."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from digit_experiments.app.run import train
from digit_experiments.core import evaluate
from digit_experiments.errors import TrainingDiverged
from digit_experiments.tracking import callback

from .conftest import HEAVY, SMALL, all_artifacts, free_port, run_cli, run_cli_imports, small_cfg


def _only_run(store):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("digit-experiments")
    (run,) = client.search_runs(experiment.experiment_id)
    return run, set(all_artifacts(client, run.info.run_id))


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("disk on fire"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_a_run_that_stops_after_training_keeps_checkpoint_and_curves(
    tmp_path, monkeypatch, error, status
):
    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(evaluate, "classification_metrics", boom)
    with pytest.raises(type(error)):
        train(small_cfg(tmp_path, "model=mlp"), output_dir=tmp_path / "out")
    assert mlflow.active_run() is None  # nothing left open for the next run
    run, paths = _only_run(tmp_path)
    assert run.info.status == status
    assert {"checkpoints/mlp_best_model.h5", "plots/learning_curves.png", "error.txt"} <= paths
    if status == "FAILED":
        assert run.data.tags["error"] == "RuntimeError: disk on fire"
        error_text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/error.txt")
        assert "disk on fire" in error_text and "Traceback" in error_text


def test_a_run_that_fails_mid_training_logs_the_epochs_so_far(tmp_path, monkeypatch):
    original = callback.EpochMetrics.on_epoch_end

    def fail_in_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise RuntimeError("lost the GPU")

    monkeypatch.setattr(callback.EpochMetrics, "on_epoch_end", fail_in_second_epoch)
    with pytest.raises(RuntimeError, match="lost the GPU"):
        train(small_cfg(tmp_path, "model=mlp", "trainer.epochs=3"), output_dir=tmp_path / "out")
    run, paths = _only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert {"checkpoints/mlp_best_model.h5", "plots/learning_curves.png"} <= paths
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        run.info.run_id, "val_accuracy"
    )
    assert [m.step for m in history] == [1, 2]


def test_a_diverging_run_is_stopped_by_the_nan_guard(tmp_path):
    cfg = small_cfg(
        tmp_path, "model=mlp", "optimizer=sgd", "optimizer.learning_rate=1e6", "trainer.epochs=5"
    )
    with pytest.raises(TrainingDiverged, match="loss is nan after epoch 1"):
        train(cfg, output_dir=tmp_path / "out")
    run, paths = _only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert "training diverged" in run.data.tags["error"]
    assert {"plots/learning_curves.png", "error.txt"} <= paths
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        run.info.run_id, "loss"
    )
    assert [m.step for m in history] == [1]  # stopped after the first epoch, not the fifth


def test_an_unreachable_tracking_server_fails_fast_before_training(tmp_path):
    uri = f"http://user:s3cr3t-pw@127.0.0.1:{free_port()}"
    started = time.monotonic()
    result, imported = run_cli_imports(*SMALL, f"tracking.uri={uri}", cwd=tmp_path)
    assert time.monotonic() - started < 60  # not MLflow's minutes of retries
    assert result.returncode == 1
    message = result.stderr.splitlines()[-1]
    assert message.startswith("digits-train: tracking server http://***@127.0.0.1:")
    assert "unreachable" in message and "s3cr3t-pw" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not imported & HEAVY  # refused before TensorFlow or MLflow was even imported
    assert not list(tmp_path.glob("outputs/*/*.h5"))


def test_a_sweep_against_an_unreachable_server_stops_before_any_job(tmp_path):
    uri = f"http://user:s3cr3t-pw@127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli("-m", "model=mlp,cnn", *SMALL, f"tracking.uri={uri}", cwd=tmp_path)
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "s3cr3t-pw" not in result.stderr
    assert "#0" not in result.stderr + result.stdout  # no job was launched


def test_a_diverging_run_in_a_process_exits_non_zero_with_one_clear_line(tmp_path):
    result = run_cli(
        *SMALL,
        "model=mlp",
        "optimizer=sgd",
        "optimizer.learning_rate=1e6",
        "trainer.epochs=5",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("digits-train: training diverged: loss is nan after epoch 1")
    )
    run, paths = _only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert {"checkpoints/mlp_best_model.h5", "plots/learning_curves.png", "error.txt"} <= paths


def _bad_npz(tmp_path):
    """A small .npz whose 13th training label is 10."""
    import numpy as np

    from digit_experiments.core import data

    arrays = data.load_idx_dir(data.bundled_dir())
    labels = arrays["train_labels"][:300].astype(np.int64)
    labels[12] = 10
    path = tmp_path / "digits.npz"
    np.savez(
        path,
        x_train=arrays["train_images"][:300],
        y_train=labels,
        x_test=arrays["test_images"][:50],
        y_test=arrays["test_labels"][:50],
    )
    return path


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: tmp / "nowhere", "{path}: data directory not found"),
        (_bad_npz, "{path} (y_train): labels must be digits 0-9, found 10 at index 12 (1 such"),
    ],
    ids=["missing", "label 10"],
)
def test_bad_data_is_refused_in_one_line_before_mlflow_is_imported(tmp_path, make_path, message):
    path = make_path(tmp_path)
    result, imported = run_cli_imports(
        *SMALL,
        "data.source=path",
        f"data.path={path}",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("digits-train: " + message.format(path=path)), last
    assert "mlflow" not in imported  # refused before MLflow was imported
    assert not (tmp_path / "mlflow.db").exists()  # so no run could be opened


def test_a_failure_while_ending_a_failed_run_still_ends_it(tmp_path, monkeypatch):
    # The store refuses the error tag while the failed run is being closed: the run must
    # still end FAILED (not stay RUNNING), keep its checkpoint, and the user must see the
    # error that failed the run, not the one that happened while closing it.
    from mlflow.exceptions import MlflowException

    from digit_experiments.tracking.runlog import RunLog

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    def refuse(self, tags):
        raise MlflowException("the store refused the tags")

    monkeypatch.setattr(evaluate, "classification_metrics", boom)
    monkeypatch.setattr(RunLog, "tags", refuse)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(small_cfg(tmp_path, "model=mlp"), output_dir=tmp_path / "out")
    run, paths = _only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert {"checkpoints/mlp_best_model.h5", "error.txt"} <= paths
