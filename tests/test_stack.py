"""`digits stack`: a real PostgreSQL, mlflow server and Ray head on 127.0.0.1.

No mocks: the tests start the stack as a user would (`digits stack up`), log a run
through the server, read it back from PostgreSQL and from the artifacts folder, join the
Ray head from another process, stop everything and check that nothing is left (no
process, no port), then start again and find the run. One stack serves the module.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digit_experiments.cli import main
from digit_experiments.stack import PORT_KEYS, Stack, processes, state

from .conftest import clean_env, needs_postgres, stack_folder


def digits(*args: str, capsys) -> tuple[int, str, str]:
    """`digits ARGS` in this process: exit status, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def recorded(folder: Path) -> dict:
    return state.load(folder)


def nothing_left(folder: Path, before: dict) -> None:
    """No process of the stack runs and nothing listens on its ports."""
    for name in ("postgres", "mlflow", "ray"):
        entry = before.get(name) or {}
        if entry.get("pid"):
            assert not processes.alive(entry["pid"], entry["started"]), name
            assert processes.session_members(entry["pid"]) == [], name
        for key in PORT_KEYS:
            assert not processes.answers(entry.get(key)), f"{name} {key} {entry.get(key)}"
    # Whatever the bookkeeping says: no process names the folder on its command line.
    mentions = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(folder) in command:
                mentions.append(f"{proc.name}: {command[:200]}")
    assert mentions == []


def parse_env(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        export, assignment = line.split(" ", 1)
        assert export == "export"
        name, value = assignment.split("=", 1)
        (found[name],) = shlex.split(value)
    return found


def log_a_run(tracking_uri: str, where: Path) -> tuple[str, str]:
    """A run with a metric and an artifact, through the server; (run id, artifact name)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment(f"stack-{time.time_ns()}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "test_accuracy", 0.987)
    artifact = where / f"note-{run.info.run_id}.txt"
    artifact.write_text("logged through the stack's server\n")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    return run.info.run_id, artifact.name


def psycopg2_connect(port: int):
    """A connection to the stack's database, as the server makes them (no password)."""
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=port, dbname="mlflow", user="mlflow")


def run_in_postgres(port: int, run_id: str) -> str | None:
    """The run's status as PostgreSQL has it (None if it has no such run)."""
    connection = psycopg2_connect(port)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,))
            row = cursor.fetchone()
    finally:
        connection.close()
    return row[0] if row else None


@pytest.fixture(scope="module")
def stack():
    """One stack for the module: up (timed), and down and removed at the end."""
    needs_postgres()
    folder = stack_folder()
    began = time.monotonic()
    try:
        Stack(folder).up()
        print(f"digits stack up: {time.monotonic() - began:.1f} s")
        yield folder
    finally:
        Stack(folder).down()
        shutil.rmtree(folder, ignore_errors=True)


def test_up_status_and_env(stack, capsys):
    code, out, _ = digits("stack", "status", "--dir", str(stack), capsys=capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["postgres", "up"],
        ["mlflow", "up"],
        ["ray", "up"],
    ]
    assert f"data {stack / 'postgres'}" in lines[0]
    assert f"data {stack / 'artifacts'}" in lines[1]

    code, out, _ = digits("stack", "env", "--dir", str(stack), capsys=capsys)
    assert code == 0
    env = parse_env(out)
    info = recorded(stack)
    assert env == {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{info['mlflow']['port']}",
        "MLFLOW_BACKEND_STORE_URI": (
            f"postgresql+psycopg2://127.0.0.1:{info['postgres']['port']}/mlflow?user=mlflow"
        ),
        "RAY_ADDRESS": f"127.0.0.1:{info['ray']['port']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(stack / "ray" / "auth_token"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    # The shell reads it back as it was printed.
    shell = subprocess.run(
        ["bash", "-c", f'{out}\nprintf %s "$MLFLOW_BACKEND_STORE_URI"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == env["MLFLOW_BACKEND_STORE_URI"]
    assert (stack / "ray" / "auth_token").stat().st_mode & 0o777 == 0o600

    # Already up: says so and changes nothing.
    code, out, _ = digits("stack", "up", "--dir", str(stack), capsys=capsys)
    assert code == 0 and "already up" in out
    assert recorded(stack) == info


def test_everything_listens_on_loopback_only(stack):
    """No socket of the stack's processes is open beyond 127.0.0.1 (ss lists them)."""
    if not shutil.which("ss"):
        pytest.skip("needs ss (iproute2)")
    info = recorded(stack)
    ours = set()
    for name in ("postgres", "mlflow", "ray"):
        leader = info[name]["pid"]
        ours |= {leader, *processes.session_members(leader)}
    ours |= set(processes.children(info["postgres"]["pid"]))  # in sessions of their own
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    ours_listening = [
        line for line in listening.splitlines() if any(f"pid={pid}," in line for pid in ours)
    ]
    hosts = {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in ours_listening}
    assert len(ours_listening) >= 3  # at least the database, the server, Ray's GCS
    assert hosts <= {"127.0.0.1", "::ffff:127.0.0.1"}, ours_listening


def test_a_run_goes_through_the_server_into_postgres_and_artifacts(stack, tmp_path):
    info = recorded(stack)
    run_id, artifact = log_a_run(info["mlflow"]["uri"], tmp_path)
    assert run_in_postgres(info["postgres"]["port"], run_id) == "FINISHED"
    # Proxied artifacts: the file is in the stack's folder, sent over HTTP.
    assert [p.name for p in (stack / "artifacts").rglob(artifact)] == [artifact]


def test_a_ray_client_in_another_process_joins_the_head(stack, capsys):
    _, out, _ = digits("stack", "env", "--dir", str(stack), capsys=capsys)
    code = (
        "import ray\n"
        "ray.init(log_to_driver=False)\n"  # RAY_ADDRESS from the environment
        "@ray.remote\n"
        "def square(x):\n"
        "    return x * x\n"
        "print('answer', ray.get(square.remote(7)))\n"
        "print('cpus', int(ray.cluster_resources()['CPU']))\n"
    )
    joined = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean_env(), **parse_env(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "answer 49" in joined.stdout
    assert f"cpus {os.cpu_count()}" in joined.stdout


def test_down_leaves_nothing_and_up_brings_the_runs_back(stack, tmp_path, capsys):
    before = recorded(stack)
    run_id, artifact = log_a_run(before["mlflow"]["uri"], tmp_path)

    began = time.monotonic()
    code, out, _ = digits("stack", "down", "--dir", str(stack), capsys=capsys)
    print(f"digits stack down: {time.monotonic() - began:.1f} s")
    assert code == 0 and "stopped" in out
    nothing_left(stack, before)
    code, out, _ = digits("stack", "status", "--dir", str(stack), capsys=capsys)
    assert code == 3
    assert [line.split()[1] for line in out.splitlines()] == ["down"] * 3
    code, out, _ = digits("stack", "down", "--dir", str(stack), capsys=capsys)
    assert code == 0 and "not running" in out  # idempotent
    assert (stack / "postgres" / "PG_VERSION").is_file()  # the data stays

    code, out, err = digits("stack", "up", "--dir", str(stack), capsys=capsys)
    assert code == 0, err
    after = recorded(stack)
    # The ports of the first `up` were free again: the same URIs.
    assert after["mlflow"]["uri"] == before["mlflow"]["uri"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=after["mlflow"]["uri"])
    assert client.get_run(run_id).data.metrics == {"test_accuracy": 0.987}
    assert [a.path for a in client.list_artifacts(run_id)] == [artifact]


def test_a_component_that_fails_stops_what_up_started(capsys):
    needs_postgres()
    folder = stack_folder()
    try:
        stack = Stack(folder)
        stack.up(ray=False)
        # A schema revision MLflow does not know: its server refuses to start on it.
        db = psycopg2_connect(recorded(folder)["postgres"]["port"])
        with db.cursor() as cursor:
            cursor.execute("UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
        db.commit()
        db.close()
        stack.down()

        code, _, err = digits("stack", "up", "--no-ray", "--dir", str(folder), capsys=capsys)
        assert code == 1
        first, second, *last_lines = err.splitlines()
        assert first == "digits stack: mlflow failed to start: mlflow server exited"
        assert second == f"last lines of {folder / 'logs' / 'mlflow-server.log'}:"
        assert any("f00dfeedbeef" in line for line in last_lines), err
        info = recorded(folder)
        assert info["postgres"]["pid"] is None  # started by this `up`, then stopped again
        nothing_left(folder, info)
    finally:
        Stack(folder).down()
        shutil.rmtree(folder, ignore_errors=True)


def test_status_of_a_folder_where_no_stack_ever_ran(tmp_path, capsys):
    folder = tmp_path / "never"
    code, out, _ = digits("stack", "status", "--dir", str(folder), capsys=capsys)
    assert code == 3
    assert out.splitlines()[0] == f"no stack in {folder} yet: digits stack up --dir {folder}"
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["postgres", "down"],
        ["mlflow", "down"],
        ["ray", "down"],
    ]
    assert not folder.exists()  # looking creates nothing
    code, _, err = digits("stack", "env", "--dir", str(folder), capsys=capsys)
    assert code == 1 and "no stack in" in err
    code, out, _ = digits("stack", "down", "--dir", str(folder), capsys=capsys)
    assert code == 0 and "nothing to stop" in out


def test_a_bad_dir_is_named(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for action in ("up", "status", "env", "down"):
        code, _, err = digits("stack", action, "--dir", str(a_file), capsys=capsys)
        assert (code, err) == (1, f"digits stack: --dir {a_file} is a file, not a folder\n")
    code, _, err = digits("stack", "up", "--dir", str(a_file / "below"), capsys=capsys)
    assert code == 1
    assert err.startswith(f"digits stack: --dir {a_file / 'below'}: cannot create it")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        code, _, err = digits("stack", "up", "--dir", str(locked), capsys=capsys)
        assert code == 1 and str(locked) in err
