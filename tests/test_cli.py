"""The real command line, in fresh processes: where runs land, Hydra's files, and what a
real `mlflow ui` process started in the project directory shows of them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from .conftest import clean_env, run_cli

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def test_mlflow_ui_started_in_the_project_shows_the_runs(project):
    root, runs = project
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    ui = subprocess.Popen(
        [str(mlflow_bin), "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(f"{base}/health") == b"OK":
                    break
            except OSError:
                pass
            assert ui.poll() is None, ui.stderr.read()
            assert time.monotonic() < deadline, "mlflow ui did not come up in 90 s"
            time.sleep(0.5)
        experiment_id = runs[0].info.experiment_id
        found = json.loads(
            _get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
        )["runs"]
        assert {r["info"]["run_id"] for r in found} == {r.info.run_id for r in runs}
        run_id = runs[0].info.run_id
        listing = json.loads(
            _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=checkpoints")
        )
        assert [f["path"] for f in listing["files"]] == ["checkpoints/mlp_best_model.h5"]
        png = _get(f"{base}/get-artifact?path=plots/learning_curves.png&run_uuid={run_id}")
        assert png.startswith(b"\x89PNG")
    finally:
        ui.terminate()
        ui.wait(timeout=30)


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
