"""`mlflow run .`: the run MLflow opens for the project is the one the training fills."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from .conftest import ROOT, clean_env

QUICK = "data.train_limit=1000 data.test_limit=200 trainer.epochs=2 tracking.log_model=false"


def _mlflow_run(tmp_path, *args):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    if client.get_experiment_by_name("project") is None:  # keep artifacts out of the repo
        client.create_experiment("project", artifact_location=(tmp_path / "art").as_uri())
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    result = subprocess.run(
        [
            str(mlflow_bin),
            "run",
            str(ROOT),
            "--env-manager",
            "local",
            "--experiment-name",
            "project",
            *args,
        ],
        cwd=tmp_path,
        env={**clean_env(), "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    experiment_id = client.get_experiment_by_name("project").experiment_id
    return client, client.search_runs([experiment_id])


def test_mlflow_run_main_records_exactly_one_finished_run(tmp_path):
    overrides = f"model=mlp {QUICK} hydra.run.dir={tmp_path}/out"
    _, runs = _mlflow_run(tmp_path, "-P", f"overrides={overrides}")
    assert len(runs) == 1
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    assert run.info.run_name == "mlp-adam-none"
    assert run.data.params["trainer.epochs"] == "2"
    assert overrides in run.data.params["overrides"]  # MLflow's own record of -P
    assert "test_accuracy" in run.data.metrics


def test_mlflow_run_sweep_makes_the_project_run_the_parent(tmp_path):
    overrides = f"model=mlp,cnn {QUICK} hydra.sweep.dir={tmp_path}/multirun"
    _, runs = _mlflow_run(tmp_path, "-e", "sweep", "-P", f"overrides={overrides}")
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "sweep"]
    children = [r for r in runs if r is not parent]
    assert len(runs) == 3 and parent.data.tags["sweep"] == "true"
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["model"] for c in children) == ["cnn", "mlp"]
    assert parent.data.params["best_run_id"] in {c.info.run_id for c in children}
