"""The real command line, in fresh processes: where runs land, Hydra's files, and what a
real `mlflow ui` process started in the project directory shows of them."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from .conftest import http, mlflow_process, run_cli, run_cli_imports

TINY = ["model=mlp", "data.train_limit=1000", "data.test_limit=200", "trainer.epochs=1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A directory where two runs were made from the command line, as a user would."""
    root = tmp_path_factory.mktemp("project")
    first = run_cli(*TINY, "optimizer=sgd", cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    # With chdir=true the job runs inside outputs/...; the store must not follow it.
    second = run_cli(*TINY, "hydra.job.chdir=true", cwd=root)
    assert second.returncode == 0, second.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("digit-experiments")
    runs = client.search_runs(experiment.experiment_id, order_by=["start_time ASC"])
    return root, runs


def test_cli_runs_land_in_the_project_store_whatever_the_working_directory(project):
    root, runs = project
    assert (root / "mlflow.db").is_file()
    assert not list((root / "outputs").rglob("mlflow.db"))
    assert not list((root / "outputs").rglob("mlruns"))
    assert [r.info.run_name for r in runs] == ["mlp-sgd-none", "mlp-adam-none"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].data.tags["overrides"] == " ".join([*TINY, "optimizer=sgd"])


def test_hydra_files_and_checkpoint_are_artifacts_under_mlruns(project):
    root, runs = project
    run_id = runs[0].info.run_id
    artifact_root = root / "mlruns" / "digit-experiments" / run_id / "artifacts"
    assert runs[0].info.artifact_uri == artifact_root.as_uri()
    hydra_files = {p.name for p in (artifact_root / "config" / ".hydra").iterdir()}
    assert hydra_files == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert "optimizer=sgd" in (artifact_root / "config/.hydra/overrides.yaml").read_text()
    assert (artifact_root / "checkpoints" / "mlp_best_model.h5").is_file()


def test_mlflow_ui_started_in_the_project_shows_the_runs(project):
    root, runs = project
    with mlflow_process("ui", cwd=root) as base:
        experiment_id = runs[0].info.experiment_id
        found = json.loads(
            http(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
        )["runs"]
        assert {r["info"]["run_id"] for r in found} == {r.info.run_id for r in runs}
        run_id = runs[0].info.run_id
        listing = json.loads(
            http(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=checkpoints")
        )
        assert [f["path"] for f in listing["files"]] == [
            "checkpoints/mlp_best_model.h5",
            "checkpoints/state",
        ]
        png = http(f"{base}/get-artifact?path=plots/learning_curves.png&run_uuid={run_id}")
        assert png.startswith(b"\x89PNG")


def test_mlflow_tracking_uri_is_respected_and_relative_to_the_project(tmp_path):
    result = run_cli(
        *TINY,
        "tracking.log_model=false",
        "tracking.experiment=elsewhere",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": "sqlite:///other.db"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{tmp_path}/other.db")
    (run,) = client.search_runs([client.get_experiment_by_name("elsewhere").experiment_id])
    assert run.info.status == "FINISHED"


def _tiny_model_and_picture(folder):
    """An untrained one-layer model saved as .h5, and a 28x28 picture of a stroke."""
    import keras
    import numpy as np
    from PIL import Image

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    model.save(folder / "tiny.h5")
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 13:15] = 255
    Image.fromarray(pixels).save(folder / "one.png")


def test_digits_predict_with_a_model_file_never_imports_mlflow(tmp_path):
    """A local .h5 needs Keras only: no MLflow, no Hydra. The process ends without
    Python's teardown (cli._exit_now), yet its exit handlers run and its answer is
    printed whole."""
    _tiny_model_and_picture(tmp_path)
    result, imported = run_cli_imports(
        "predict",
        "--model",
        "tiny.h5",
        "one.png",
        "--json",
        cwd=tmp_path,
        module="digit_experiments.cli",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (answer,) = json.loads(result.stdout)
    assert answer["file"] == "one.png" and len(answer["probabilities"]) == 10
    assert "keras" in imported  # the report was written by an exit handler
    assert not imported & {"mlflow", "hydra", "omegaconf", "sqlalchemy"}, imported
    assert not (tmp_path / "mlflow.db").exists()


def test_digits_predict_refuses_a_store_that_is_not_there(tmp_path):
    """A models:/ URI without a store: one line, before TensorFlow or MLflow is imported,
    and no empty mlflow.db left behind. The same through the fast exit: status 1."""
    _tiny_model_and_picture(tmp_path)
    result, imported = run_cli_imports(
        "predict",
        "--model",
        "models:/mnist-digit-classifier@champion",
        "one.png",
        cwd=tmp_path,
        module="digit_experiments.cli",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"digits predict: no MLflow store at {tmp_path.resolve() / 'mlflow.db'}: train a "
        "model first (python -m digit_experiments.train) or pass --tracking-uri"
    ), last
    assert not imported & {"mlflow", "tensorflow", "keras"}, imported
    assert not (tmp_path / "mlflow.db").exists()
