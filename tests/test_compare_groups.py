"""`digits compare --group-by`: repeats over seeds as a row per configuration (mean ±
sample std, min, max), on table rows; the command on a real store; and a real tiny sweep
over seeds whose parent run carries the same table and its chart."""

from __future__ import annotations

import csv
import io
import statistics
import tempfile
import time
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection
from mlflow.tracking import MlflowClient

from digit_experiments import cli
from digit_experiments.app import sweep
from digit_experiments.reporting import compare, groups, plots
from digit_experiments.reporting.describe import NOTE_TAG
from digit_experiments.tracking import search

from .conftest import all_artifacts, run_cli

BY_CONFIG = {"comparison/by_config.md", "comparison/by_config.csv", "comparison/by_config.png"}


def _row(job, model, seed, accuracy, status="FINISHED", parent="p1", **params):
    """A row as compare.row makes it, with the params a run logs."""
    return {
        "job": job,
        "status": status,
        "overrides": f"model={model} trainer.seed={seed} data.train_limit=500",
        "model": model,
        "test_accuracy": accuracy,
        "test_f1_macro": None if accuracy is None else accuracy - 0.01,
        "best_val_accuracy": accuracy,
        "epochs": 1 + job % 2,
        "seconds": 10.0 + job,
        "run_id": f"{job:032d}",
        "params": {
            "model.name": model,
            "optimizer.name": "adam",
            "trainer.seed": str(seed),
            "data.train_limit": "500",
            # Where a run is recorded and how it ran: not what it is.
            "tracking.parent_run_id": parent,
            "trainer.threads": str(job),
            **params,
        },
    }


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


# --- on rows -----------------------------------------------------------------------------


def test_runs_group_by_every_param_but_the_seed_and_where_they_were_recorded():
    rows = [
        _row(0, "mlp", 1, 0.90),
        _row(1, "cnn", 1, 0.95),
        _row(2, "mlp", 2, 0.92, parent="p2"),  # another sweep of the same configuration
        _row(3, "cnn", 2, 0.96),
        _row(4, "cnn", 3, 0.99),
        _row(5, "mlp", 3, None, status="FAILED"),  # no honest metrics: left out
    ]
    table = groups.sort_groups(groups.by_config(rows, []), "test_accuracy")
    assert [(g["config"], g["runs"], g["seeds"]) for g in table] == [
        ("cnn", 3, "1,2,3"),
        ("mlp", 2, "1,2"),
    ]
    cnn, mlp = table
    assert cnn["test_accuracy_mean"] == pytest.approx(statistics.mean([0.95, 0.96, 0.99]))
    # The sample standard deviation (n - 1), not the population's.
    assert cnn["test_accuracy_std"] == pytest.approx(statistics.stdev([0.95, 0.96, 0.99]))
    assert cnn["test_accuracy_std"] != pytest.approx(statistics.pstdev([0.95, 0.96, 0.99]))
    assert (cnn["test_accuracy_min"], cnn["test_accuracy_max"]) == (0.95, 0.99)
    assert mlp["test_accuracy_std"] == pytest.approx(0.02 / 2**0.5)
    assert mlp["seconds_mean"] == pytest.approx(11.0)
    assert [r["job"] for r in mlp["rows"]] == [0, 2]
    assert groups.has_repeats(table)


def test_a_group_of_one_run_has_no_std_and_a_sweep_without_repeats_has_none():
    table = groups.by_config([_row(0, "mlp", 1, 0.9), _row(1, "cnn", 1, 0.95)], [])
    assert [g["runs"] for g in table] == [1, 1] and not groups.has_repeats(table)
    assert table[0]["test_accuracy_std"] is None
    assert groups.cell(table[0], "test_accuracy") == "0.9000 ± -"
    rows = _csv(groups.to_csv(table, []))
    assert rows[0]["test_accuracy_std"] == "" and rows[0]["test_accuracy_mean"] == "0.9"
    text = groups.to_text(table, [])
    assert "sample standard deviation (n - 1)" in text.splitlines()[0]


def test_an_ensemble_logged_under_the_sweep_is_a_row_of_its_own():
    """`digits ensemble --parent SWEEP` logs its run under the sweep: it is no
    configuration (its params are its members), so it neither joins nor renames one."""
    ensemble = _row(9, "ensemble", "", 0.99)
    ensemble["params"] = {"ensemble.size": "3", "member_0.run_id": "a", "data.n_test": "10000"}
    rows = [_row(0, "mlp", 1, 0.90), _row(1, "cnn", 1, 0.95), _row(2, "cnn", 2, 0.97), ensemble]
    table = groups.by_config(rows, [])
    assert [(g["config"], g["runs"]) for g in table] == [
        ("mlp", 1),
        ("cnn", 2),
        (f"ensemble of 3 ({ensemble['run_id'][:8]})", 1),
    ]
    assert table[-1]["test_accuracy_mean"] == 0.99 and table[-1]["model.name"] is None
    assert "member_0.run_id" not in table[0]
    # Grouped by a key the runs share, the ensemble still stands alone.
    named = groups.by_config(rows, ["optimizer.name"])
    assert [g["runs"] for g in named] == [3, 1]


def test_explicit_keys_a_group_name_and_unknown_keys():
    rows = [
        _row(0, "mlp", 1, 0.90, **{"optimizer.name": "sgd"}),
        _row(1, "mlp", 2, 0.92),
        _row(2, "cnn", 1, 0.95),
    ]
    keys = groups.resolve_keys(groups.parse_keys("model, optimizer.name"), rows)
    assert keys == ["model.name", "optimizer.name"]  # `model` is its option, model.name
    table = groups.by_config(rows, keys)
    assert [(g["model.name"], g["optimizer.name"], g["runs"]) for g in table] == [
        ("mlp", "sgd", 1),
        ("mlp", "adam", 1),
        ("cnn", "adam", 1),
    ]
    table = groups.by_config(rows, groups.resolve_keys(["model.name"], rows))
    assert [(g["config"], g["runs"]) for g in table] == [("mlp", 2), ("cnn", 1)]
    header = groups.to_text(table, ["model.name"]).splitlines()[1].split()
    assert header[:3] == ["model.name", "runs", "seeds"]
    assert _csv(groups.to_csv(table, ["model.name"]))[0]["model.name"] == "mlp"

    with pytest.raises(ValueError) as error:
        groups.resolve_keys(["modle.name"], rows)
    message = str(error.value)
    assert "'modle.name'" in message and "did you mean 'model.name'" in message
    assert "known: data.train_limit, model.name, optimizer.name" in message


def test_groups_the_overrides_do_not_tell_apart_are_named_by_their_params():
    # Two sweeps typed alike whose configurations differ (a default changed between
    # them): their names come from the param that differs.
    rows = [
        _row(0, "mlp", 1, 0.90, **{"trainer.epochs": "1"}),
        _row(1, "mlp", 2, 0.91, **{"trainer.epochs": "1"}),
        _row(2, "mlp", 1, 0.93, **{"trainer.epochs": "3"}),
    ]
    assert [g["config"] for g in groups.by_config(rows, [])] == ["epochs=1", "epochs=3"]


def test_markdown_escapes_names_and_the_chart_shows_mean_std_and_each_seed():
    rows = [_row(i, "mlp", i, 0.9 + i / 100, **{"model.hidden": "a|b"}) for i in range(3)]
    rows[0]["overrides"] = rows[1]["overrides"] = rows[2]["overrides"] = "model.hidden=a|b"
    table = groups.by_config(rows, [])
    markdown = groups.to_markdown(table, [])
    assert "| hidden=a\\|b | 3 | 0,1,2 | 0.9100 ± 0.0100 [0.9000, 0.9200] |" in markdown

    figure = plots.repeats(["mlp", "cnn"], [[0.90, 0.92], [0.95, 0.96, 0.99]])
    (ax,) = figure.axes
    bars = ax.containers[0]  # the error bars: mean ± sample std
    mean_x, mean_y = bars.lines[0].get_data()
    assert list(mean_y) == pytest.approx([0.91, statistics.mean([0.95, 0.96, 0.99])])
    (segments,) = bars.lines[2]
    low, high = segments.get_segments()[1][:, 1]
    assert high - low == pytest.approx(2 * statistics.stdev([0.95, 0.96, 0.99]))
    dots = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert sorted(len(c.get_offsets()) for c in dots) == [2, 3]  # every run a dot


# --- the command, and a sweep's parent, on a real store --------------------------------


@pytest.fixture
def seeds_store(tmp_path):
    """A sweep parent with 4 finished children (mlp and cnn, seeds 1 and 2) and a failed
    one, as a sweep leaves them, without training."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("seeds", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment, tags={"sweep": "true"}, run_name="sweep")
    accuracy = {("mlp", 1): 0.90, ("cnn", 1): 0.95, ("mlp", 2): 0.93, ("cnn", 2): 0.96}
    for job, ((model, seed), value) in enumerate([*accuracy.items(), (("mlp", 3), None)]):
        child = client.create_run(
            experiment,
            tags={
                search.PARENT_TAG: parent.info.run_id,
                "hydra_job_num": str(job),
                "overrides": f"model={model} trainer.seed={seed}",
            },
        )
        run_id = child.info.run_id
        params = {"model.name": model, "trainer.seed": seed, "trainer.threads": job}
        for key, param in params.items():
            client.log_param(run_id, key, param)
        if value is None:
            client.set_terminated(run_id, "FAILED")
            continue
        client.log_metric(run_id, "test_accuracy", value)
        client.set_terminated(run_id)
    return uri, client, client.get_run(parent.info.run_id)


def test_digits_compare_group_by_on_a_store(seeds_store, tmp_path, capsys):
    uri, client, parent = seeds_store
    code = cli.main(
        ["--tracking-uri", uri, "compare", "--group-by", "--csv", "g.csv", "--markdown", "g.md"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert parent.info.run_id in out[0] and "(n - 1)" in out[1]
    assert [line.split()[:3] for line in out[3:]] == [["cnn", "2", "1,2"], ["mlp", "2", "1,2"]]
    rows = _csv((tmp_path / "g.csv").read_text())
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(0.955)
    assert float(rows[1]["test_accuracy_std"]) == pytest.approx(statistics.stdev([0.90, 0.93]))
    assert "| cnn | 2 | 1,2 | 0.9550 ± 0.0071 [0.9500, 0.9600] |" in (tmp_path / "g.md").read_text()

    # Explicit keys, --experiment, --columns picking the metrics, smallest first.
    code = cli.main(
        ["--tracking-uri", uri, "compare", "--experiment", "seeds", "--group-by", "model"]
        + ["--columns", "test_accuracy", "--ascending"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[2].split() == ["model.name", "runs", "seeds", "test_accuracy"]
    assert [line.split()[0] for line in out[3:]] == ["mlp", "cnn"]

    # Without --group-by: the table of runs, as before.
    assert cli.main(["--tracking-uri", uri, "compare"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2 + 5


def test_a_bad_group_by_says_which_key_and_what_is_known(seeds_store, capsys):
    uri, _, _ = seeds_store
    for args, said in [
        (["--group-by", "model.nme"], "--group-by: no run has the param 'model.nme'"),
        (["--group-by", "seed"], "known: model.name, trainer.seed, trainer.threads"),
        (["--group-by", "--columns", "run_id"], "--columns: with --group-by, name metrics"),
    ]:
        assert cli.main(["--tracking-uri", uri, "compare", *args]) == 1
        assert said in capsys.readouterr().err


def test_a_sweep_parent_gets_by_config_only_when_it_has_repeats(seeds_store):
    uri, client, parent = seeds_store
    rows = [compare.row(run) for run in search.children(client, parent)]
    single = [r for r in rows if r["params"]["trainer.seed"] == "1"]  # mlp vs cnn, once
    assert sweep.log_by_config(client, parent.info.run_id, single) == []
    assert not set(all_artifacts(client, parent.info.run_id))
    table = sweep.log_by_config(client, parent.info.run_id, rows)
    assert [g["config"] for g in table] == ["cnn", "mlp"]
    assert set(all_artifacts(client, parent.info.run_id)) == BY_CONFIG


def _child(client, parent, status="FINISHED", accuracy=None, tags=(), params=(), start_time=None):
    run = client.create_run(
        parent.info.experiment_id,
        start_time=start_time,
        tags={search.PARENT_TAG: parent.info.run_id, **dict(tags)},
    )
    for key, value in dict(params).items():
        client.log_param(run.info.run_id, key, value)
    if accuracy is not None:
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_a_run_that_joins_a_finished_sweep_is_counted_as_its_next_job(seeds_store, tmp_path):
    uri, client, parent = seeds_store
    parent_id = parent.info.run_id
    assert not sweep.refresh_parent(uri, parent_id)  # still running: the sweep will do it
    client.set_terminated(parent_id, "FAILED")  # as its failed job (4) left it
    client.log_param(parent_id, "best_run_id", "the sweep's choice")
    seed3 = {"overrides": "model=mlp trainer.seed=3"}
    params = {"model.name": "mlp", "trainer.seed": 3, "trainer.threads": 1}
    joined = _child(client, parent, accuracy=0.97, tags=seed3, params=params)
    later = _child(client, parent, "RUNNING", tags=seed3, params=params)
    ensemble_tags = {"model": "ensemble", NOTE_TAG: "ensemble of 2", "mlflow.runName": "ens"}
    ensemble = _child(client, parent, accuracy=0.99, tags=ensemble_tags)

    assert sweep.refresh_parent(uri, parent_id)
    tags = client.get_run(parent_id).data.tags
    # Jobs 0-4 (4 failed): the joined run is job 5; the one still training waits.
    assert client.get_run(joined).data.tags[compare.JOINED_TAG] == "5"
    assert compare.JOINED_TAG not in client.get_run(later).data.tags
    assert (tags["jobs_total"], tags["jobs_failed"], tags["failed_jobs"]) == ("6", "1", "4")
    assert tags["best_run_id"] == joined  # 0.97: the ensemble (0.99) is no job
    after = client.get_run(parent_id)
    assert after.info.status == "FAILED"  # the sweep's own outcome stays
    assert after.data.params["best_run_id"] == "the sweep's choice"
    assert after.data.metrics[sweep.SWEEP_BEST] == 0.97
    # The ensemble keeps its name and description, and counts nowhere.
    kept = client.get_run(ensemble)
    assert (kept.info.run_name, kept.data.tags[NOTE_TAG]) == ("ens", "ensemble of 2")
    table = {r["config"]: r for r in _csv(_text(client, parent_id, "comparison/by_config.csv"))}
    assert set(table) == {"mlp", "cnn"} and table["mlp"]["runs"] == "3"
    assert table["mlp"]["seeds"] == "1,2,3"
    jobs = _csv(_text(client, parent_id, "comparison/jobs.csv"))
    assert [r["job"] for r in jobs] == ["0", "1", "2", "3", "4", "5"]
    assert "job #5 of" in client.get_run(joined).data.tags[NOTE_TAG]
    assert "| mlp | 3 | 1,2,3 |" in tags[NOTE_TAG]

    # The second one ends: job 6; the first keeps its number.
    client.log_metric(later, "test_accuracy", 0.91)
    client.set_terminated(later)
    assert sweep.refresh_parent(uri, parent_id)
    assert client.get_run(joined).data.tags[compare.JOINED_TAG] == "5"
    assert client.get_run(later).data.tags[compare.JOINED_TAG] == "6"
    assert client.get_run(parent_id).data.tags["jobs_total"] == "7"
    # A run that is no sweep is left alone.
    assert not sweep.refresh_parent(uri, joined)


def test_joined_runs_are_numbered_in_the_order_they_started(seeds_store):
    """Whichever ends first, and whatever a concurrent refresh wrote last."""
    uri, client, parent = seeds_store
    parent_id = parent.info.run_id
    client.set_terminated(parent_id)
    params = {"model.name": "mlp", "trainer.seed": 3, "trainer.threads": 1}
    now = int(time.time() * 1000)
    first = _child(client, parent, "RUNNING", params=params, start_time=now)
    second = _child(client, parent, accuracy=0.92, params=params, start_time=now + 1000)

    # The second ends first: it is job 6, 5 stays the first one's while it trains.
    assert sweep.refresh_parent(uri, parent_id)
    assert client.get_run(second).data.tags[compare.JOINED_TAG] == "6"
    assert compare.JOINED_TAG not in client.get_run(first).data.tags
    assert [r["job"] for r in _csv(_text(client, parent_id, "comparison/jobs.csv"))] == [*"012346"]
    # A refresh that raced with another and wrote the same number twice is put right.
    client.log_metric(first, "test_accuracy", 0.94)
    client.set_terminated(first)
    client.set_tag(first, compare.JOINED_TAG, "6")
    assert sweep.refresh_parent(uri, parent_id)
    numbers = [client.get_run(r).data.tags[compare.JOINED_TAG] for r in (first, second)]
    assert numbers == ["5", "6"]
    assert client.get_run(parent_id).data.tags["jobs_total"] == "7"


def _text(client, run_id, path):
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_text()


# --- a real sweep over seeds ---------------------------------------------------------------


def test_a_sweep_over_seeds_is_summarised_per_configuration(tmp_path, capsys):
    result = run_cli(
        "-m",
        "model=mlp,cnn",
        "trainer.seed=1,2",
        "data.train_limit=500",
        "data.test_limit=100",
        "trainer.epochs=1",
        "tracking.log_model=false",
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    parent = search.latest_sweep(client)
    children = search.children(client, parent)
    assert parent.info.status == "FINISHED" and len(children) == 4

    assert cli.main(["--tracking-uri", uri, "compare", "--group-by", "--csv", "g.csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[:3] for line in out[3:]) == [
        ["cnn", "2", "1,2"],
        ["mlp", "2", "1,2"],
    ]
    shown = {r["config"]: r for r in _csv((tmp_path / "g.csv").read_text())}
    for model in ("mlp", "cnn"):
        logged = [c.data.metrics for c in children if c.data.params["model.name"] == model]
        for metric in ("test_accuracy", "test_f1_macro"):
            values = [m[metric] for m in logged]
            assert float(shown[model][f"{metric}_mean"]) == pytest.approx(statistics.mean(values))
            assert float(shown[model][f"{metric}_std"]) == pytest.approx(statistics.stdev(values))
            assert float(shown[model][f"{metric}_min"]) == min(values)

    # The parent carries the same table, its chart, and says so in its description.
    assert set(all_artifacts(client, parent.info.run_id, "comparison")) >= BY_CONFIG
    logged_table = client.download_artifacts(
        parent.info.run_id, "comparison/by_config.csv", str(tmp_path)
    )
    with open(logged_table) as f:
        assert {r["config"]: r["test_accuracy_mean"] for r in csv.DictReader(f)} == {
            model: row["test_accuracy_mean"] for model, row in shown.items()
        }
    note = client.get_run(parent.info.run_id).data.tags[NOTE_TAG]
    assert "by configuration (every param but trainer.seed): 2 groups" in note
    assert "| config | runs | seeds | test_accuracy | test_f1_macro |" in note

    # A third mlp seed joins the finished sweep: the parent's summary counts it.
    joining = ["model=mlp", "trainer.seed=3", "data.train_limit=500", "data.test_limit=100"]
    joining += ["trainer.epochs=1", "tracking.log_model=false"]
    result = run_cli(*joining, f"tracking.parent_run_id={parent.info.run_id}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    joined = [c for c in search.children(client, parent) if "hydra_job_num" not in c.data.tags]
    assert len(joined) == 1 and joined[0].data.tags[compare.JOINED_TAG] == "4"
    table = {
        r["config"]: r for r in _csv(_text(client, parent.info.run_id, "comparison/by_config.csv"))
    }
    assert (table["mlp"]["runs"], table["mlp"]["seeds"]) == ("3", "1,2,3")
    after = client.get_run(parent.info.run_id)
    assert after.info.status == "FINISHED" and after.data.tags["jobs_total"] == "5"
    assert "| mlp | 3 | 1,2,3 |" in after.data.tags[NOTE_TAG]

    # One that fails (it diverges) is counted too, as a failed job.
    diverging = [*joining, "trainer.epochs=2", "optimizer=sgd", "optimizer.learning_rate=1e6"]
    result = run_cli(*diverging, f"tracking.parent_run_id={parent.info.run_id}", cwd=tmp_path)
    assert result.returncode != 0 and "training diverged" in result.stderr
    tags = client.get_run(parent.info.run_id).data.tags
    assert (tags["jobs_total"], tags["jobs_failed"], tags["failed_jobs"]) == ("6", "1", "5")
