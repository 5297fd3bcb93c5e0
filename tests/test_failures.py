"""A run that fails or is interrupted ends FAILED or KILLED, with what exists logged."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from digit_experiments import evaluate
from digit_experiments.train import train

from .conftest import small_cfg


def _only_run(store):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("digit-experiments")
    (run,) = client.search_runs(experiment.experiment_id)
    paths = set()
    stack = [""]
    while stack:
        for item in client.list_artifacts(run.info.run_id, stack.pop()):
            (stack.append if item.is_dir else paths.add)(item.path)
    return run, paths


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
    from digit_experiments import callbacks

    original = callbacks.EpochMetrics.on_epoch_end

    def fail_in_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise RuntimeError("lost the GPU")

    monkeypatch.setattr(callbacks.EpochMetrics, "on_epoch_end", fail_in_second_epoch)
    with pytest.raises(RuntimeError, match="lost the GPU"):
        train(small_cfg(tmp_path, "model=mlp", "trainer.epochs=3"), output_dir=tmp_path / "out")
    run, paths = _only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert {"checkpoints/mlp_best_model.h5", "plots/learning_curves.png"} <= paths
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        run.info.run_id, "val_accuracy"
    )
    assert [m.step for m in history] == [1, 2]
