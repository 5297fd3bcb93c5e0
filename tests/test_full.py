"""Full-size runs (all 60,000 training images): the accuracy targets. `make test-slow`."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from digit_experiments import cli
from digit_experiments.app.run import train

from .conftest import compose_cfg, http, mlflow_process, run_cli, working_in

# Each accuracy of the README's results table, with the floor a run must reach.
TARGETS = [
    # The seed's own architectures: the seed reported 98.7% (CNN) and 98.0% (MLP).
    ("model=cnn", "digit-experiments", 0.990),  # what `make train` runs
    ("model=mlp", "digit-experiments", 0.975),
    # 99% in 3 short epochs (its 15 s of training are checked by benchmarks/fast.py).
    ("experiment=fast", "fast", 0.990),
    # Recorded 99.46%; issue 12's target for an MLP.
    ("experiment=best_mlp", "best-mlp", 0.9935),
    # experiment=best_cnn: over 3 seeds, in the test after this one.
]


@pytest.mark.slow
@pytest.mark.parametrize(("override", "experiment", "target"), TARGETS)
def test_each_result_reaches_its_target_on_full_mnist(tmp_path, override, experiment, target):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    metrics = train(compose_cfg(override, f"tracking.uri={uri}"), output_dir=tmp_path / "out")
    assert metrics["test_accuracy"] >= target
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.n_train"] == "54000"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "target"),
    # The seed's architectures, unchanged, with the default training settings: the mean
    # of 3 seeds beats the Keras example's 99.25% (CNN) and the seed's own 98.0% (MLP).
    [("cnn", 0.9925), ("mlp", 0.980)],
)
def test_the_seed_architectures_reach_their_targets_as_a_mean_over_3_seeds(tmp_path, model, target):
    result = run_cli("-m", f"model={model}", "trainer.seed=1,2,3", cwd=tmp_path, timeout=3000)
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("digit-experiments").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["trainer.seed"] for r in children) == ["1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in children)
    accuracy = [r.data.metrics["test_accuracy"] for r in children]
    assert sum(accuracy) / 3 >= target, accuracy


# experiment=best_cnn over 3 seeds: each run within 30 minutes of training on 2 cores,
# the best and the mean of the 3, and the 3 averaged by `digits ensemble`. Recorded
# (benchmarks/results/accuracy.json, ensemble.json; the preset ships 5 shifted views, so
# these are in views): seeds 1-3 99.73 / 99.68 / 99.70%, so the mean is issue 12's 99.70%
# (checked as such); seeds 4-7, joined later, 99.73 / 99.78 / 99.73 / 99.71%: issue 12's
# one run >= 99.75% is seed 5 of 7, the tail of a 0.03% spread, which 3 seeds reach only
# sometimes, so the best of 3 is guarded by a floor, as is the ensemble (the 7 averaged
# 99.75%, short of the 99.8%). The slowest run 24.5 minutes. Runs differ in their
# last digit from one rerun to the next (threads).
BEST_CNN = {"one": 0.997, "mean": 0.997, "ensemble": 0.997, "train_seconds": 1800}


@pytest.mark.slow
def test_best_cnn_over_3_seeds_and_their_ensemble_reach_their_targets(tmp_path):
    result = run_cli("-m", "experiment=best_cnn", "trainer.seed=1,2,3", cwd=tmp_path, timeout=7200)
    assert result.returncode == 0, result.stderr[-4000:]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("best-cnn").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["trainer.seed"] for r in children) == ["1", "2", "3"]
    assert all(r.data.metrics["train_seconds"] <= BEST_CNN["train_seconds"] for r in children)
    accuracy = [r.data.metrics["test_accuracy"] for r in children]
    assert max(accuracy) >= BEST_CNN["one"], accuracy
    assert sum(accuracy) / 3 >= BEST_CNN["mean"], accuracy

    with working_in(tmp_path):
        args = ["--tracking-uri", uri, "ensemble", "--parent", parent.info.run_id, "--top", "3"]
        assert cli.main(args) == 0
    (ensemble,) = client.search_runs([experiment], "tags.model = 'ensemble'")
    assert ensemble.data.metrics["test_accuracy"] >= BEST_CNN["ensemble"]


@pytest.mark.slow
def test_mlp_vs_cnn_preset_on_full_mnist_seen_through_a_real_server(tmp_path):
    result = run_cli("-m", "experiment=mlp_vs_cnn", cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    with mlflow_process(
        "server", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path
    ) as base:
        experiment = json.loads(
            http(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mlp-vs-cnn")
        )["experiment"]
        runs = json.loads(
            http(
                f"{base}/api/2.0/mlflow/runs/search",
                {"experiment_ids": [experiment["experiment_id"]]},
            )
        )["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
        (parent,) = [r for r, t in zip(runs, tags) if t.get("sweep") == "true"]
        children = {
            t["model"]: r
            for r, t in zip(runs, tags)
            if t.get("mlflow.parentRunId") == parent["info"]["run_id"]
        }
        assert parent["info"]["status"] == "FINISHED" and set(children) == {"mlp", "cnn"}
        accuracy = {}
        for model, run in children.items():
            assert run["info"]["status"] == "FINISHED"
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            accuracy[model] = metrics["test_accuracy"]
            listing = json.loads(
                http(
                    f"{base}/api/2.0/mlflow/artifacts/list?"
                    f"run_id={run['info']['run_id']}&path=checkpoints"
                )
            )
            assert [f["path"] for f in listing["files"]] == [
                f"checkpoints/{model}_best_model.h5",
                "checkpoints/state",  # the state after the last epoch (trainer.resume)
            ]
        assert accuracy["mlp"] >= 0.975 and accuracy["cnn"] >= 0.990
