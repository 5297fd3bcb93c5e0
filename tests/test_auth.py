"""A tracking server that asks for a user and password (`mlflow server --app-name
basic-auth`), for real: a wrong password is refused before anything is trained, in one
line; the right one records the run, and the password is nowhere in what the run shows
or stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from .conftest import SMALL, all_artifacts, mlflow_process, run_cli, run_cli_imports

PASSWORD = "Wr0ng-Or-Right-7f3a9c"  # noqa: S105 - a test server's admin password


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-server")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root}/basic_auth.db\n"
        "admin_username = admin\n"
        f"admin_password = {PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-key"}
    with mlflow_process(
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
        cwd=root,
        env=env,
    ) as base:
        yield base


def test_a_wrong_password_is_refused_before_training_in_one_line(auth_server, tmp_path):
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "not-it"}
    result, imported = run_cli_imports(
        *SMALL, "model=mlp", f"tracking.uri={auth_server}", cwd=tmp_path, env=env
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"digits-train: tracking server {auth_server} asks for a user and password, and the "
        "credentials were refused (401): set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD"
    ]
    assert "keras" not in imported and "mlflow" not in imported  # refused before either

    result = run_cli(*SMALL, "model=mlp", f"tracking.uri={auth_server}", cwd=tmp_path)
    assert result.returncode == 1
    assert "the credentials are needed (401)" in result.stderr


def test_the_right_password_records_the_run_and_is_never_shown_or_stored(
    auth_server, tmp_path, monkeypatch
):
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    result = run_cli(*SMALL, "model=mlp", f"tracking.uri={auth_server}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert PASSWORD not in result.stdout + result.stderr

    for name, value in env.items():  # the test's own client logs in the same way
        monkeypatch.setenv(name, value)
    client = MlflowClient(auth_server)
    experiment = client.get_experiment_by_name("digit-experiments")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert all(PASSWORD not in str(v) for v in run.data.params.values())
    assert all(PASSWORD not in str(v) for v in run.data.tags.values())
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    files = [p for p in local.rglob("*") if p.is_file()]
    assert {"config/config.yaml", "logs/train.log"} <= {str(p.relative_to(local)) for p in files}
    assert len(files) == len(list(all_artifacts(client, run.info.run_id)))
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
    for path in (tmp_path / "outputs").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
