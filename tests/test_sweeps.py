"""Hydra multiruns as MLflow parent and child runs: basic, failing, joblib, Optuna, presets.

Each sweep runs as a user would run it (a fresh `python -m digit_experiments.train -m`
process) on small slices; the store is then read back through MlflowClient."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from digit_experiments.app.help import CONF_DIR
from digit_experiments.app.sweep import SWEEP_BEST, SWEEP_BEST_VALUE
from digit_experiments.reporting.describe import NOTE_TAG

from .conftest import clean_env, run_cli

QUICK = ["data.train_limit=1000", "data.test_limit=200", "trainer.epochs=1"]


def _sweep(tmp_path, *overrides, ok=True):
    result = run_cli("-m", *overrides, cwd=tmp_path, timeout=900)
    if ok:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def _parent_and_children(tmp_path, experiment):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) + 1 == len(runs)  # nothing outside the sweep
    return client, parent, sorted(children, key=lambda r: int(r.data.tags["hydra_job_num"]))


def _table(client, parent):
    text = mlflow.artifacts.load_text(
        f"{client.get_run(parent.info.run_id).info.artifact_uri}/comparison/jobs.csv"
    )
    return list(csv.DictReader(io.StringIO(text)))


def test_a_sweep_is_one_parent_with_a_child_per_job(tmp_path):
    _sweep(tmp_path, "model=mlp,cnn", *QUICK)
    client, parent, children = _parent_and_children(tmp_path, "digit-experiments")
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep model=mlp,cnn " + " ".join(QUICK)
    assert "model=mlp,cnn" in parent.data.tags["sweep_overrides"]
    assert parent.data.tags["sweep_dir"].startswith(str(tmp_path / "multirun"))
    assert [c.data.tags["model"] for c in children] == ["mlp", "cnn"]
    assert all(c.info.status == "FINISHED" for c in children)
    # The parent reached each job as a config value (not through the environment), and
    # the jobs' overrides show what the user swept, not that bookkeeping.
    for child in children:
        assert child.data.params["tracking.parent_run_id"] == parent.info.run_id
        assert "parent_run_id" not in child.data.tags["overrides"]
        assert child.data.tags["overrides"].startswith(f"model={child.data.tags['model']}")
    # Each child is a full run: its checkpoint among its artifacts.
    for child in children:
        name = child.data.tags["model"]
        files = [f.path for f in client.list_artifacts(child.info.run_id, "checkpoints")]
        assert files == [f"checkpoints/{name}_best_model.h5", "checkpoints/state"]

    rows = _table(client, parent)
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED"]
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in children}
    best = max(children, key=lambda c: c.data.metrics["test_accuracy"])
    assert parent.data.params["best_run_id"] == best.info.run_id
    # In MLflow's UI: the jobs named by what differs, the parent's one metric named as no
    # job's is (counts are tags), its description the table (tests/test_mlflow_ui.py
    # follows it in a browser).
    assert [c.info.run_name for c in children] == ["mlp #0", "cnn #1"]
    assert parent.data.metrics == {SWEEP_BEST: best.data.metrics["test_accuracy"]}
    assert (parent.data.tags["jobs_total"], parent.data.tags["jobs_failed"]) == ("2", "0")
    assert "[Compare these runs in MLflow](#/compare-runs?runs=" in parent.data.tags[NOTE_TAG]
    assert children[0].data.tags[NOTE_TAG].startswith("mlp, adam, none: ")
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert artifacts >= {
        "comparison/jobs.csv",
        "comparison/jobs.md",
        "comparison/test_accuracy.png",
    }

    # `digits compare` shows the latest sweep, best first, and writes Markdown.
    shown = subprocess.run(
        [sys.executable, "-m", "digit_experiments.cli", "compare", "--markdown", "table.md"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert parent.info.run_id in lines[0]
    assert best.info.run_id in lines[2]  # header, column names, then the best job
    assert (tmp_path / "table.md").read_text().count(" FINISHED ") == 2


def test_a_failed_job_is_recorded_and_does_not_lose_the_sweep(tmp_path):
    # Job 0 works; job 2 fails inside its run (it diverges: the NaN guard stops it); jobs
    # 1 and 3 are refused before they can open a run (epochs=0): each job records its
    # own outcome in MLflow, the refused ones as FAILED runs saying why.
    result = _sweep(
        tmp_path,
        "model=mlp",
        "optimizer=sgd",
        "optimizer.learning_rate=0.01,1e6",
        "trainer.epochs=1,0",
        "data.train_limit=1000",
        "data.test_limit=200",
        ok=False,
    )
    assert result.returncode != 0
    client, parent, children = _parent_and_children(tmp_path, "digit-experiments")
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FINISHED", "FAILED", "FAILED", "FAILED"]
    assert "training diverged" in children[2].data.tags["error"]
    for refused in (children[1], children[3]):
        assert "trainer.epochs must be >= 1, got 0" in refused.data.tags["error"]
        assert "trainer.epochs=0" in refused.data.tags["overrides"]
        # Named by what differs within the sweep, and what happened to it.
        num = refused.data.tags["hydra_job_num"]
        assert refused.info.run_name.endswith(f" epochs=0 #{num} (refused)")
        what = refused.info.run_name.split(" #")[0].replace("_", "\\_")  # as Markdown
        assert refused.data.tags[NOTE_TAG].startswith(
            f"{what}: FAILED: ConfigError: invalid config: trainer.epochs must be >= 1, got 0"
        )
    assert [c.info.run_name.split(" (")[0] for c in children] == [
        "learning_rate=0.01 epochs=1 #0",
        "learning_rate=0.01 epochs=0 #1",
        "learning_rate=1e+06 epochs=1 #2",
        "learning_rate=1e+06 epochs=0 #3",
    ]
    assert "FAILED: " in children[2].data.tags[NOTE_TAG]
    assert (parent.data.tags["jobs_total"], parent.data.tags["jobs_failed"]) == ("4", "3")
    assert "4 jobs, 3 failed" in parent.data.tags[NOTE_TAG]
    rows = _table(client, parent)
    assert [r["status"] for r in rows] == ["FINISHED", "FAILED", "FAILED", "FAILED"]
    # Every row comes from a run: nothing needed the jobs' folders on the driver's disk.
    assert [r["run_id"] for r in rows] == [c.info.run_id for c in children]
    assert parent.data.tags["failed_jobs"] == "1, 2, 3"
    assert parent.data.params["best_run_id"] == children[0].info.run_id


def test_joblib_runs_two_jobs_at_a_time_on_sqlite_and_loses_none(tmp_path):
    _sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=mlp,cnn",
        "optimizer=adam,sgd",
        *QUICK,
    )
    client, parent, children = _parent_and_children(tmp_path, "digit-experiments")
    assert parent.info.status == "FINISHED"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    for child in children:  # every epoch metric and test metric made it
        assert child.data.metrics["epochs_trained"] == 1
        assert "test_accuracy" in child.data.metrics
        assert child.data.params["trainer.threads"] == "None"
    assert {(c.data.tags["model"], c.data.tags["optimizer"]) for c in children} == {
        ("mlp", "adam"),
        ("mlp", "sgd"),
        ("cnn", "adam"),
        ("cnn", "sgd"),
    }


def test_submitit_local_runs_each_job_as_a_slurm_job_would_run(tmp_path):
    # hydra/launcher=submitit_local: the SLURM path without a SLURM cluster. Each job is
    # a submitit process that gets its store and parent run as config values, and the
    # CPUs the launcher reserved for it (cpus_per_task: 1 here) as TensorFlow's threads.
    result = _sweep(tmp_path, "hydra/launcher=submitit_local", "model=mlp,cnn", *QUICK)
    assert "validated against ConfigStore schema" not in result.stderr
    client, parent, children = _parent_and_children(tmp_path, "digit-experiments")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["launcher"].endswith("submitit_launcher.LocalLauncher")
    assert [c.data.tags["model"] for c in children] == ["mlp", "cnn"]
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        log_text = client.download_artifacts(child.info.run_id, "logs/train.log", str(tmp_path))
        assert "TensorFlow limited to 1 threads" in Path(log_text).read_text()
    assert list((tmp_path / "multirun").glob("*/*/.submitit/*"))  # submitit ran them


def test_optuna_trials_are_children_and_the_parent_has_the_best_parameters(tmp_path):
    _sweep(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=6",
        "tracking.log_model=false",
        *QUICK,
    )
    client, parent, children = _parent_and_children(tmp_path, "optuna-cnn")
    assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children)
    params = parent.data.params
    assert {
        "best.optimizer.learning_rate",
        "best.trainer.batch_size",
        "best.regularization.dense_dropout",
        "best.regularization.l2",
    } <= params.keys()
    best_val = max(c.data.metrics["best_val_accuracy"] for c in children)
    assert parent.data.metrics[SWEEP_BEST_VALUE] == pytest.approx(best_val)
    assert set(parent.data.metrics) == {SWEEP_BEST, SWEEP_BEST_VALUE}
    # Each trial is named by its values; the parent's table has the search's objective.
    for child in children:
        assert "learning_rate=" in child.info.run_name and "batch_size=" in child.info.run_name
        assert child.info.run_name.endswith(f" #{child.data.tags['hydra_job_num']}")
    assert "6 trials, all finished" in parent.data.tags[NOTE_TAG]
    assert "| val accuracy |" in parent.data.tags[NOTE_TAG]
    assert "val accuracy 0." in parent.data.tags[NOTE_TAG]  # the trial Optuna chose
    # The trials really searched: not all the same learning rate.
    assert len({c.data.params["optimizer.learning_rate"] for c in children}) == 6
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/optimization_history.png" in artifacts


def test_every_preset_runs(tmp_path):
    presets = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert {"mlp_vs_cnn", "smoke"} <= set(presets)
    _sweep(tmp_path, "experiment=glob(*)", "tracking.log_model=false", *QUICK)
    _, parent, children = _parent_and_children(tmp_path, "digit-experiments")
    assert parent.info.status == "FINISHED"
    assert len(children) == len(presets)
    assert sorted(c.data.tags["overrides"].split()[0] for c in children) == [
        f"experiment={p}" for p in presets
    ]
