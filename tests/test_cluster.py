"""Team scale, for real: sweeps on a Ray cluster against an MLflow server backed by
PostgreSQL (`digits stack`: PostgreSQL, mlflow server with proxied artifacts, a Ray
head, all on 127.0.0.1). One stack for the whole module; the jobs are small.

Guarantees checked: a Ray sweep gives what a joblib sweep gives; 8 jobs on 2 workers
lose nothing; a killed worker fails only its job (and a sweep launched again resumes
it); the tracking server and PostgreSQL restarted mid-sweep lose nothing.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from digit_experiments.app.sweep import LOST_JOB
from digit_experiments.tracking import resume
from digit_experiments.tracking.runlog import flatten

from .conftest import (
    EPOCH_METRICS,
    all_artifacts,
    clean_env,
    compose_cfg,
    needs_postgres,
    stack_folder,
)

QUICK = ["data.train_limit=1000", "data.test_limit=200", "trainer.epochs=2"]
# Ray's view of this machine in the stack: 2 CPUs, one per job.
RAY = ["hydra/launcher=ray", "trainer.threads=1"]


@pytest.fixture(scope="module")
def stack():
    needs_postgres()
    from digit_experiments.stack import Stack

    folder = stack_folder()
    stack = Stack(folder)
    stack.up(num_cpus=2)
    try:
        yield stack
    finally:
        stack.down()
        shutil.rmtree(folder, ignore_errors=True)


def sweep(stack, cwd: Path, *overrides: str, timeout: int = 900):
    env = {**clean_env(), **stack.env()}
    return subprocess.run(
        [sys.executable, "-m", "digit_experiments.train", "-m", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def client_for(stack) -> MlflowClient:
    return MlflowClient(stack.env()["MLFLOW_TRACKING_URI"])


def sweep_runs(client, experiment: str):
    """(parent, children by job number) of the one sweep in `experiment`."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, sorted(children, key=lambda r: int(r.data.tags["hydra_job_num"]))


def table(client, parent) -> list[dict]:
    path = client.download_artifacts(parent.info.run_id, "comparison/jobs.csv")
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def test_a_ray_sweep_gives_what_a_joblib_sweep_gives(stack, tmp_path):
    # 4 jobs: two train, two are refused before they open a run (epochs=0); each job
    # records its own outcome, whichever launcher ran it.
    swept = [
        "trainer.threads=1",
        "model=mlp,cnn",
        "trainer.epochs=1,0",
        "data.train_limit=1000",
        "data.test_limit=200",
    ]
    joblib = sweep(
        stack,
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *swept,
        "tracking.experiment=by-joblib",
    )
    ray = sweep(stack, tmp_path, "hydra/launcher=ray", *swept, "tracking.experiment=by-ray")
    assert joblib.returncode != 0 and ray.returncode != 0  # a job failed: the sweep says so

    client = client_for(stack)
    outcomes = {}
    for experiment in ("by-joblib", "by-ray"):
        parent, children = sweep_runs(client, experiment)
        rows = table(client, parent)
        name = f" tracking.experiment={experiment}"  # the one override that differs
        outcomes[experiment] = (
            parent.info.status,
            [(c.data.tags["overrides"].replace(name, ""), c.info.status) for c in children],
            [(r["job"], r["overrides"].replace(name, ""), r["status"]) for r in rows],
            sorted(a.path for a in client.list_artifacts(parent.info.run_id, "comparison")),
            parent.data.tags["failed_jobs"],
        )
        assert [r["run_id"] for r in rows] == [c.info.run_id for c in children]
    assert outcomes["by-joblib"] == outcomes["by-ray"]
    assert outcomes["by-ray"][0] == "FAILED"
    assert [status for _, status in outcomes["by-ray"][1]] == [
        "FINISHED",  # mlp, 1 epoch
        "FAILED",  # mlp, 0 epochs: refused
        "FINISHED",
        "FAILED",
    ]


def test_eight_jobs_on_two_ray_workers_lose_nothing(stack, tmp_path):
    result = sweep(
        stack,
        tmp_path,
        *RAY,
        "model=mlp",
        "optimizer=adam,sgd,rmsprop,adamw",
        "trainer.seed=1,2",
        *QUICK,
        "tracking.experiment=load",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    client = client_for(stack)
    parent, children = sweep_runs(client, "load")
    assert parent.info.status == "FINISHED"
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    # On 2 CPUs with 1 per job, Ray ran 2 at a time, in more than one worker process.
    assert len({c.data.tags["pid"] for c in children}) >= 2

    artifacts = set(all_artifacts(client, children[0].info.run_id))
    assert {"checkpoints/mlp_best_model.h5", "plots/learning_curves.png"} <= artifacts
    for child in children:
        run_id = child.info.run_id
        # Every param: each key of the job's composed config, and what the run adds.
        composed = compose_cfg(*child.data.tags["overrides"].split(), "tracking.uri=x")
        expected = set(flatten(OmegaConf.to_container(composed, resolve=True)))
        expected |= {"model.num_params", "model.jit_compiled"}  # what the run adds
        expected |= {"data.n_train", "data.n_val", "data.n_test"}
        assert set(child.data.params) == expected
        for key in EPOCH_METRICS:  # every epoch of every metric
            assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
        assert "test_accuracy" in child.data.metrics
        assert set(all_artifacts(client, run_id)) == artifacts  # every artifact
    models = client.search_logged_models([parent.info.experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(c.info.run_id for c in children)


def test_a_killed_ray_worker_fails_only_its_job_and_a_relaunch_resumes_it(stack, tmp_path):
    client = client_for(stack)
    # Job 0 is long enough to be killed in the middle; job 1 is quick.
    swept = [
        *RAY,
        "model=mlp",
        "data.train_limit=3000,1000",
        "data.test_limit=200",
        "trainer.epochs=12",
        "trainer.early_stopping.enabled=false",
        "tracking.experiment=killed",
    ]
    killed = {}

    def kill_job_0():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            experiment = client.get_experiment_by_name("killed")
            if experiment is not None:
                for run in client.search_runs([experiment.experiment_id]):
                    tags = run.data.tags
                    if tags.get("hydra_job_num") != "0" or run.info.status != "RUNNING":
                        continue
                    if int(tags.get(resume.EPOCH_TAG, 0)) >= 2:
                        os.kill(int(tags["pid"]), signal.SIGKILL)
                        killed.update(run_id=run.info.run_id, epoch=tags[resume.EPOCH_TAG])
                        return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_job_0)
    killer.start()
    result = sweep(stack, tmp_path, *swept)
    killer.join()
    assert killed, "job 0 was never seen training"
    assert result.returncode != 0
    assert "its Ray worker was lost" in result.stdout + result.stderr

    parent, children = sweep_runs(client, "killed")
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FINISHED"]
    lost = children[0]
    assert lost.info.run_id == killed["run_id"]
    assert lost.data.tags["error"] == LOST_JOB
    assert [r["status"] for r in table(client, parent)] == ["FAILED", "FINISHED"]

    # Launched again: the lost job continues in its own run, the finished one is reused.
    again = sweep(stack, tmp_path, *swept, "trainer.resume=auto", "tracking.skip_finished=true")
    assert again.returncode == 0, again.stderr[-4000:]
    run = client.get_run(killed["run_id"])
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["resumed_after_epoch"]) >= 2
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
    assert steps == list(range(1, 13))


def test_server_and_postgres_restarted_mid_sweep_lose_nothing(stack, tmp_path):
    client = client_for(stack)
    epochs = 10
    swept = [
        *RAY,
        "model=mlp",
        "optimizer=adam,sgd",
        "data.train_limit=3000",
        "data.test_limit=200",
        f"trainer.epochs={epochs}",
        "trainer.early_stopping.enabled=false",
        "tracking.experiment=restarts",
    ]
    restarted = []

    def restart_when_training():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("restarts")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any(int(r.data.tags.get(resume.EPOCH_TAG, 0)) >= 1 for r in runs):
                break
            time.sleep(0.2)
        # Away longer than MLflow's own retries (7 s): whatever call a job is making
        # then waits for it (tracking.reconnect_timeout) instead of failing the job.
        stack.restart("mlflow", pause=10)
        restarted.append("server")
        time.sleep(2)
        stack.restart("postgres", pause=2)
        restarted.append("postgres")

    restarter = threading.Thread(target=restart_when_training)
    restarter.start()
    result = sweep(stack, tmp_path, *swept)
    restarter.join()
    assert restarted == ["server", "postgres"]
    assert result.returncode == 0, result.stderr[-4000:]
    parent, children = sweep_runs(client, "restarts")
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    for child in children:
        for key in EPOCH_METRICS:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (key, steps)
