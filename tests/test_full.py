"""Full-size runs (all 60,000 training images): the accuracy targets. `make test-slow`."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from digit_experiments.app.run import train

from .conftest import compose_cfg, http, mlflow_process, run_cli


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "target"),
    [("cnn", 0.990), ("mlp", 0.975)],  # the seed reported 98.7% and 98.0%
)
def test_the_seed_models_beat_their_targets_on_full_mnist(tmp_path, model, target):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    metrics = train(
        compose_cfg(f"model={model}", f"tracking.uri={uri}"), output_dir=tmp_path / "out"
    )
    assert metrics["test_accuracy"] >= target
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("digit-experiments").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.n_train"] == "54000"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "target"),
    [
        # Both beat the seed's best (98.7%); they got 99.21% and 99.67% when recorded.
        ("best_mlp", 0.985),
        ("best_cnn", 0.995),  # about 26 minutes on 2 cores
    ],
)
def test_the_best_presets_beat_their_targets_on_full_mnist(tmp_path, preset, target):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    metrics = train(
        compose_cfg(f"experiment={preset}", f"tracking.uri={uri}"), output_dir=tmp_path / "out"
    )
    assert metrics["test_accuracy"] >= target
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(preset.replace("_", "-"))  # the preset's own
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.n_train"] == "54000"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


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
            assert [f["path"] for f in listing["files"]] == [f"checkpoints/{model}_best_model.h5"]
        assert accuracy["mlp"] >= 0.975 and accuracy["cnn"] >= 0.990
