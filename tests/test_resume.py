"""Runs that continue: a run stopped by SIGTERM (a scheduler) resumes into the same
MLflow run from its last epoch, with its optimizer state; a sweep launched again resumes
its interrupted jobs and skips the finished ones. Real training, a real SQLite store."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from digit_experiments.app.sweep import quoted
from digit_experiments.tracking import resume

from .conftest import SMALL, run_cli, start_cli

# Long enough to be stopped in the middle; small enough to be quick (about 0.3 s an epoch).
LONG = [
    "model=mlp",
    "data.train_limit=2000",
    "data.test_limit=500",
    "trainer.epochs=12",
    "trainer.early_stopping.enabled=false",
    # The rate follows the optimizer's step count: a resumed run that lost its optimizer
    # state would start the schedule again, and the rate would jump back up.
    "trainer.schedule.name=cosine",
    "tracking.system_metrics_interval=0.5",
]


def stop_after_epoch(process, client: MlflowClient, epoch: int, timeout: float = 180) -> str:
    """SIGTERM `process` once its (running) run has sent its state after `epoch`;
    returns the run's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()[-3000:]
        for experiment in client.search_experiments():
            for run in client.search_runs([experiment.experiment_id]):
                running = run.info.status == "RUNNING"
                if running and int(run.data.tags.get(resume.EPOCH_TAG, 0)) >= epoch:
                    process.send_signal(signal.SIGTERM)
                    output = process.communicate(timeout=120)[0]
                    assert process.returncode == 143, output[-3000:]
                    return run.info.run_id
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no state after epoch {epoch} within {timeout} s")


def steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_a_run_stopped_by_sigterm_resumes_into_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = stop_after_epoch(start_cli(*LONG, f"tracking.uri={uri}", cwd=tmp_path), client, 3)
    stopped = client.get_run(run_id)
    assert stopped.info.status == "KILLED"
    done = int(stopped.data.tags[resume.EPOCH_TAG])
    assert 3 <= done < 12

    result = run_cli(*LONG, f"tracking.uri={uri}", f"trainer.resume={run_id}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "error" not in run.data.tags
    assert run.data.tags["resumed_after_epoch"] == str(done)
    assert run.data.metrics["epochs_trained"] == 12
    # Epochs numbered on from where the run stopped: each step once, none missing.
    assert steps(client, run_id, "val_accuracy") == list(range(1, 13))
    assert steps(client, run_id, "loss") == list(range(1, 13))
    # The optimizer's step count came back with its variables: the cosine schedule goes on
    # decreasing across the resume instead of starting over.
    rates = [m.value for m in client.get_metric_history(run_id, "learning_rate")]
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    # And it learnt on from its state: the first resumed epoch is not a fresh model's.
    accuracy = [m.value for m in client.get_metric_history(run_id, "accuracy")]
    assert accuracy[done] > accuracy[0]
    # Still one run, with everything a run has; system metrics went on in the same run.
    assert len(client.search_runs([run.info.experiment_id])) == 1
    names = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert "checkpoints/mlp_best_model.h5" in names
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
    assert any(k.startswith("system/system_memory_usage") for k in run.data.metrics)


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    small = [*SMALL, "model=mlp", f"tracking.uri={uri}"]
    assert run_cli(*small, cwd=tmp_path).returncode == 0
    client = MlflowClient(uri)
    (finished,) = client.search_runs(
        [client.get_experiment_by_name("digit-experiments").experiment_id]
    )
    finished_id = finished.info.run_id

    result = run_cli(*small, f"trainer.resume={finished_id}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"digits-train: trainer.resume={finished_id}: the run already FINISHED"
    )

    # Same run, other config: named, with the key that differs.
    killed = client.create_run(finished.info.experiment_id)
    client.set_tag(killed.info.run_id, resume.EPOCH_TAG, "1")
    client.set_tag(killed.info.run_id, resume.HASH_TAG, "0" * 16)
    client.log_param(killed.info.run_id, "model.name", "cnn")
    client.set_terminated(killed.info.run_id, "KILLED")
    result = run_cli(*small, f"trainer.resume={killed.info.run_id}", cwd=tmp_path)
    assert result.returncode == 1
    assert "was trained with another config (model.name: run cnn, now mlp" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_cli(*small, "trainer.resume=0123456789abcdef0123456789abcdef", cwd=tmp_path)
    assert result.returncode == 1
    assert "no such run in this store" in result.stderr
    # Nothing was trained or added by the refusals.
    assert len(client.search_runs([finished.info.experiment_id])) == 2


def test_a_sweep_launched_again_resumes_the_interrupted_job_and_skips_the_finished(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    common = [*LONG[1:], f"tracking.uri={uri}"]
    # Earlier: the MLP finished; the CNN was stopped by the scheduler after epoch 2.
    assert run_cli("model=mlp", *common, cwd=tmp_path).returncode == 0
    cnn_id = stop_after_epoch(start_cli("model=cnn", *common, cwd=tmp_path), client, 2)
    experiment_id = client.get_experiment_by_name("digit-experiments").experiment_id
    mlp_id = next(
        r.info.run_id for r in client.search_runs([experiment_id]) if r.data.tags["model"] == "mlp"
    )

    result = run_cli(
        "-m",
        "model=mlp,cnn",
        *common,
        "trainer.resume=auto",
        "tracking.skip_finished=true",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,) = client.search_runs([experiment_id], "tags.sweep = 'true'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    by_model = {c.data.tags["model"]: c for c in children}
    assert set(by_model) == {"mlp", "cnn"}
    # The CNN went on in its own run, now part of this sweep.
    assert by_model["cnn"].info.run_id == cnn_id
    assert by_model["cnn"].info.status == "FINISHED"
    assert steps(client, cnn_id, "val_accuracy") == list(range(1, 13))
    # The MLP was not trained again: a child stands for its finished run.
    reused = by_model["mlp"]
    assert reused.data.tags["reused_run_id"] == mlp_id
    assert (
        reused.data.metrics["test_accuracy"] == client.get_run(mlp_id).data.metrics["test_accuracy"]
    )
    # With its params, so that grouping and the UI's param columns see it like the others.
    assert reused.data.params == client.get_run(mlp_id).data.params
    assert reused.data.params["model.name"] == "mlp"
    assert "skipped: this config already FINISHED as run " + mlp_id in result.stdout + result.stderr
    # Both are in the sweep's comparison; the overrides shown are the user's choices.
    table = client.download_artifacts(parent.info.run_id, "comparison/jobs.md", str(tmp_path))
    text = Path(table).read_text()
    assert "model=mlp" in text and "model=cnn" in text
    assert "trainer.resume" not in text and "tracking.uri" not in text


@pytest.mark.parametrize(
    "value",
    ["sqlite:////tmp/a b/mlflow.db", "http://u:p'q@h:5000/x", "C:\\dir\\", "a\\'b", "12345"],
)
def test_values_passed_to_jobs_survive_hydras_override_grammar(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"tracking.uri={quoted(value)}")
    assert parsed.value() == value


def test_epochs_whose_metrics_a_kill_prevented_are_sent_once_on_resume(tmp_path):
    """The state after epoch 3 was saved, then the process died before epoch 3's metrics
    reached the store (EpochMetrics saves state first): the resumed run sends epoch 3
    from the restored history, and steps 1..3 are each in the store once."""
    from digit_experiments.tracking.runlog import RunLog

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    history = {"loss": [0.9, 0.5, 0.3], "epoch_seconds": [1.0, 1.1, 1.2]}
    before = RunLog(client, run_id, tmp_path / "first", uri)
    for step in (1, 2):
        before.epoch(step, {key: values[step - 1] for key, values in history.items()})
    after = RunLog(client, run_id, tmp_path / "resumed", uri)
    after.history.update(history)
    after.resend_missing(3)
    after.epoch(4, {"loss": 0.2, "epoch_seconds": 1.3})
    for key, values in history.items():
        logged = client.get_metric_history(run_id, key)
        assert [(m.step, m.value) for m in logged] == [
            *zip([1, 2, 3], values),
            (4, {"loss": 0.2, "epoch_seconds": 1.3}[key]),
        ]


def test_an_epoch_the_store_took_just_before_a_stop_signal_is_not_sent_twice(tmp_path):
    """SIGTERM can land after the store took an epoch's metrics and before the epoch
    left the queue of unsent ones; the stopped run's salvage sends that queue again.
    The epoch keeps the timestamp it was queued with, so the store drops the repeat
    (CI once saw step 3 twice in a resumed run's val_accuracy)."""
    from digit_experiments.tracking.runlog import RunLog

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    record = RunLog(client, run_id, tmp_path / "out", uri)
    record.epoch(1, {"val_accuracy": 0.9, "epoch_seconds": 1.0})
    sent = record.metrics

    def taken_then_stopped(*args, **kwargs):
        sent(*args, **kwargs)
        raise KeyboardInterrupt  # the signal, raised as the call returns

    record.metrics = taken_then_stopped
    with pytest.raises(KeyboardInterrupt):
        record.epoch(2, {"val_accuracy": 0.95, "epoch_seconds": 1.1})
    assert [step for step, _, _ in record.unsent] == [2]  # taken, yet still queued
    record.metrics = sent
    record.salvage("stopped")
    for key in ("val_accuracy", "epoch_seconds"):
        assert steps(client, run_id, key) == [1, 2], key
