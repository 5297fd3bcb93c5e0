"""`digits ensemble` on a store with three small runs of one sweep (two MLPs and a CNN,
trained for real on small slices) and one run without a logged model: the ensemble
is one model whose probabilities are its members' mean, logged as a run with its
lineage and test reports, served and promoted like any model; bad requests log nothing."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import keras
import mlflow
import mlflow.keras
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from digit_experiments import cli
from digit_experiments.app.run import train
from digit_experiments.core import data, views
from digit_experiments.core import ensemble as ensemble_core
from digit_experiments.errors import ModelError
from digit_experiments.inference import served
from digit_experiments.inference.loading import load_model
from digit_experiments.reporting import compare, groups

from .conftest import all_artifacts, small_cfg, working_in
from .test_views import moved

NAME = "ensemble-test-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep's parent run with four children, named by what they are: mlp (adam), sgd
    (an mlp that ships shifted views: trainer.test_time_shift=1), cnn, and nomodel (an
    mlp trained with tracking.log_model=false)."""
    root = tmp_path_factory.mktemp("ensemble")
    uri = f"sqlite:///{root}/mlflow.db"
    with working_in(root):
        client = MlflowClient(uri)
        experiment_id = client.create_experiment(
            "digit-experiments", artifact_location=(root / "mlruns").as_uri()
        )
        parent = client.create_run(experiment_id, tags={"sweep": "true"}, run_name="sweep")
        child = f"tracking.parent_run_id={parent.info.run_id}"
        for name, overrides in {
            "mlp": ["model=mlp", "data.train_limit=1000"],
            "sgd": [
                "model=mlp",
                "optimizer=sgd",
                "data.train_limit=1000",
                "trainer.test_time_shift=1",
            ],
            "cnn": ["model=cnn"],
            "nomodel": ["model=mlp", "data.train_limit=1000", "tracking.log_model=false"],
        }.items():
            cfg = small_cfg(root, *overrides, child, f"tracking.run_name={name}")
            train(cfg, output_dir=root / name)
        client.set_terminated(parent.info.run_id)
    mlflow.set_tracking_uri(uri)
    children = client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    runs = {r.info.run_name: r for r in children}
    return {"root": root, "uri": uri, "client": client, "parent": parent, "runs": runs}


def digits(store, *args, capsys):
    """`digits ARGS` in-process; returns (exit code, stdout, stderr)."""
    code = cli.main(["--tracking-uri", store["uri"], *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _all_runs(store):
    client = store["client"]
    ids = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(ids)}


def _model_id(client, run):
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    return found[0].model_id if found else None


@pytest.fixture(scope="module")
def made(store):
    """`digits ensemble --parent P --top 3`, and the run it logged."""
    with working_in(store["root"]):
        code = cli.main(
            ["--tracking-uri", store["uri"], "ensemble", "--parent", store["parent"].info.run_id]
            + ["--top", "3"]
        )
    assert code == 0
    client = store["client"]
    found = client.search_runs([store["parent"].info.experiment_id], "tags.model = 'ensemble'")
    assert len(found) == 1
    run = client.get_run(found[0].info.run_id)  # search_runs leaves model inputs out
    return {"run": run, "model_id": _model_id(client, run)}


def test_the_ensemble_averages_its_members_probabilities(store, made):
    run = made["run"]
    member_ids = run.data.tags["ensemble.members"].split(",")
    with_models = [store["runs"][name].info.run_id for name in ("mlp", "sgd", "cnn")]
    assert sorted(member_ids) == sorted(with_models)  # the run without a model is left out
    arrays = data.load_idx_dir(data.bundled_dir())
    x = data.to_model_input(arrays["test_images"][:16])
    client = store["client"]
    # sgd ships shifted views and the others do not: each joins as its bare network.
    assert (
        run.data.params["test_time_shift"] == "0" and "test_time_augmentation" not in run.data.tags
    )
    members = [
        views.inner(load_model(f"models:/{_model_id(client, client.get_run(i))}"))
        for i in member_ids
    ]
    members = [network.predict(x, verbose=0) for network in members]
    network = mlflow.keras.load_model(f"models:/{made['model_id']}")
    assert isinstance(network, keras.Model) and network.input_shape == (None, 28, 28, 1)
    np.testing.assert_allclose(network.predict(x, verbose=0), np.mean(members, axis=0), atol=1e-6)


def test_the_run_has_its_lineage_metrics_and_reports(store, made):
    run, client = made["run"], store["client"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("ensemble-") and "cnn" in run.info.run_name
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["mlflow.parentRunId"] == store["parent"].info.run_id
    assert tags["ensemble.size"] == "3" and tags["ensemble.metric"] == "test_accuracy"
    members = tags["ensemble.members"].split(",")
    # Best first, by the members' own test_accuracy.
    scores = [client.get_run(i).data.metrics["test_accuracy"] for i in members]
    assert scores == sorted(scores, reverse=True)
    assert [params[f"member_{i}.run_id"] for i in range(3)] == members
    model_ids = {_model_id(client, client.get_run(i)) for i in members}
    assert {params[f"member_{i}.model_id"] for i in range(3)} == model_ids
    # The members' logged models are the run's model inputs.
    assert {m.model_id for m in run.inputs.model_inputs} == model_ids
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["mnist-test"]

    assert params["data.n_test"] == "10000"
    for key in ("test_accuracy", "test_f1_macro", "test_loss", "best_member_test_accuracy"):
        assert key in metrics, key
    accuracies = [metrics[f"member_{i}_test_accuracy"] for i in range(3)]
    assert metrics["best_member_test_accuracy"] == max(accuracies)
    assert metrics["gain_over_best_member"] == pytest.approx(
        metrics["test_accuracy"] - max(accuracies)
    )
    assert 0.5 < metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    artifacts = set(all_artifacts(client, run.info.run_id))
    assert {
        "plots/confusion_matrix.png",
        "plots/sample_predictions.png",
        "reports/confusion_matrix.csv",
        "reports/classification_report.txt",
        "reports/classification_report.json",
        "reports/members.json",
        "reports/model_summary.txt",
    } <= artifacts
    listed = json.loads(_text(client, run.info.run_id, "reports/members.json"))
    assert [m["run_id"] for m in listed] == members
    logged = client.get_logged_model(made["model_id"])
    assert logged.source_run_id == run.info.run_id
    assert logged.params["ensemble.size"] == "3"


def _text(client, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def test_the_logged_model_answers_pictures_like_a_single_model(store, made):
    model_uri = f"models:/{made['model_id']}"
    info = mlflow.models.get_model_info(model_uri)
    assert set(info.flavors) >= {"keras", "python_function"}
    assert info.flavors["python_function"]["loader_module"] == "digit_experiments.inference.served"
    arrays = data.load_idx_dir(data.bundled_dir())
    images, labels = arrays["test_images"][:12], arrays["test_labels"][:12]
    answer = mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"image": [served.png(image) for image in images]})
    )
    expected = mlflow.keras.load_model(model_uri).predict(data.to_model_input(images), verbose=0)
    assert list(answer["digit"]) == list(expected.argmax(axis=1))
    np.testing.assert_allclose(np.array(answer["probabilities"].tolist()), expected, atol=1e-5)
    assert np.mean(answer["digit"] == labels) >= 0.5


def test_promote_predict_and_export_take_the_ensemble(store, made, capsys, tmp_path):
    run_id = made["run"].info.run_id
    parent = store["parent"].info.run_id
    code, out, err = digits(
        store,
        "promote",
        "--parent",
        parent,
        "--filter",
        "tags.model = 'ensemble'",
        "--name",
        NAME,
        capsys=capsys,
    )
    assert code == 0, err
    champion = store["client"].get_model_version_by_alias(NAME, "champion")
    assert champion.run_id == run_id and champion.tags["model_family"] == "ensemble"

    picture = tmp_path / "digit.png"
    image = data.load_idx_dir(data.bundled_dir())["test_images"][0]
    picture.write_bytes(served.png(image))
    code, out, err = digits(
        store,
        "predict",
        "--model",
        f"models:/{NAME}@champion",
        "--json",
        str(picture),
        capsys=capsys,
    )
    assert code == 0, err
    assert len(json.loads(out)[0]["probabilities"]) == 10

    exported = tmp_path / "ensemble.h5"
    code, _, err = digits(
        store,
        "export",
        "--model",
        f"models:/{NAME}@champion",
        "--out",
        str(exported),
        capsys=capsys,
    )
    assert code == 0, err
    x = data.to_model_input(image[None])
    np.testing.assert_allclose(
        keras.models.load_model(exported, compile=False).predict(x, verbose=0),
        mlflow.keras.load_model(f"models:/{made['model_id']}").predict(x, verbose=0),
        atol=1e-6,
    )


def test_runs_named_make_a_top_level_run_in_the_experiment_asked_for(store, made, capsys):
    mlp, sgd = store["runs"]["mlp"].info.run_id, store["runs"]["sgd"].info.run_id
    code, out, err = digits(
        store,
        "ensemble",
        "--runs",
        f"{sgd}, {mlp}",
        "--name",
        "two-mlps",
        "--experiment-name",
        "ensembles",
        capsys=capsys,
    )
    assert code == 0, err
    client = store["client"]
    experiment = client.get_experiment_by_name("ensembles")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "two-mlps" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["ensemble.members"] == f"{sgd},{mlp}"  # in the order given
    assert run.info.run_id in out and "best member" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top", "4"], "--top 4: sweep 'sweep' ("),  # the ensemble itself is no member
        (["--top", "1"], "--top must be >= 2, got 1"),
        (["--runs", "0123456789abcdef,{cnn}"], "--runs: no run '0123456789abcdef'"),
        (["--runs", "{cnn},{nomodel}"], "--runs: run {nomodel} has no logged model"),
        (["--runs", "{cnn}"], "--runs: an ensemble needs at least 2 runs, got 1"),
        (["--runs", "{cnn},{cnn}"], "--runs: run '{cnn}' is named twice"),
        (["--runs", "{cnn},{mlp}", "--top", "2"], "--top 2: not with --runs"),
        (["--experiment", "nowhere"], "no experiment named 'nowhere'"),
        (["--metric", "nonsense"], "--metric: no finished run of sweep 'sweep'"),
        (["--test-time-shift", "-1"], "--test-time-shift must be >= 0, got -1"),
        (["--test-time-shift", "28"], "--test-time-shift 28: test-time shift must be 1 to 27"),
    ],
)
def test_bad_requests_are_refused_in_one_line_and_log_nothing(store, made, capsys, args, message):
    ids = {name: r.info.run_id for name, r in store["runs"].items()}
    args = [a.format(**ids) for a in args]
    if "--runs" not in args and "--experiment" not in args:
        args = ["--parent", store["parent"].info.run_id, *args]
    before = _all_runs(store)
    code, out, err = digits(store, "ensemble", *args, capsys=capsys)
    assert code == 1 and out == ""
    assert err.startswith("digits ensemble: ") and len(err.strip().splitlines()) == 1, err
    assert message.format(**ids) in err
    assert _all_runs(store) == before


def test_members_that_take_other_pictures_are_refused():
    def network(size, classes):
        return keras.Sequential(
            [keras.Input((size, size, 1)), keras.layers.Flatten(), keras.layers.Dense(classes)]
        )

    with pytest.raises(ModelError, match=r"run b: its model takes input \(None, 32, 32, 1\)"):
        ensemble_core.check_compatible({"run a": network(28, 10), "run b": network(32, 10)})
    with pytest.raises(ModelError, match=r"run b: its model gives output \(None, 5\)"):
        ensemble_core.check_compatible({"run a": network(28, 10), "run b": network(28, 5)})


def _views_mean(network, x, shift: int = 1):
    """What shifted views should answer: the network's mean over the moved pictures."""
    return np.mean(
        [network.predict(moved(x, r, c), verbose=0) for r, c in views.offsets(shift)], axis=0
    )


def test_a_run_with_test_time_shifts_ships_and_declares_them(store):
    client, run = store["client"], store["runs"]["sgd"]
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert params["trainer.test_time_shift"] == "1"
    assert tags["test_time_augmentation"] == views.describe(1)
    # test_accuracy is the shipped model's; the bare network's is kept beside it.
    assert {"test_accuracy", "single_view_test_accuracy", "single_view_test_loss"} <= set(metrics)
    assert "single_view_test_accuracy" not in store["runs"]["mlp"].data.metrics
    shipped = mlflow.keras.load_model(f"models:/{_model_id(client, run)}")
    assert shipped.name == views.NAME
    # The checkpoint stays the bare network; the logged model is it in its views.
    with tempfile.TemporaryDirectory() as tmp:
        h5 = client.download_artifacts(run.info.run_id, "checkpoints/mlp_best_model.h5", tmp)
        bare = keras.models.load_model(h5, compile=False)
    x = data.to_model_input(data.load_idx_dir(data.bundled_dir())["test_images"][:16])
    np.testing.assert_allclose(shipped.predict(x, verbose=0), _views_mean(bare, x), atol=1e-5)


def test_compare_tells_a_run_tested_in_views_from_a_bare_one(store, tmp_path, capsys):
    """Its test_accuracy is the views': the table shows the bare network's beside it."""
    parent, runs = store["parent"].info.run_id, store["runs"]
    table = tmp_path / "jobs.csv"
    code, out, _ = digits(store, "compare", "--parent", parent, "--csv", str(table), capsys=capsys)
    assert code == 0 and "single_view_test_accuracy" in out.splitlines()[1]
    rows = {r["run_id"]: r for r in csv.DictReader(table.open())}
    shifted = runs["sgd"].data.metrics["single_view_test_accuracy"]
    assert float(rows[runs["sgd"].info.run_id]["single_view_test_accuracy"]) == shifted
    assert rows[runs["mlp"].info.run_id]["single_view_test_accuracy"] == ""
    # Per configuration too; and a table of runs tested bare has no such column.
    code, out, _ = digits(store, "compare", "--parent", parent, "--group-by", "", capsys=capsys)
    assert code == 0 and "single_view_test_accuracy" in out
    bare = [compare.row(runs[name]) for name in ("mlp", "cnn")]
    assert compare.VIEWS_COLUMN not in compare.to_text(bare)
    assert compare.VIEWS_COLUMN not in groups.to_markdown(groups.by_config(bare, []), [])


def test_members_that_all_ship_views_make_an_ensemble_in_them_unless_told(store, capsys):
    """Averaging their shipped models would answer in views without saying so: the
    ensemble takes their views (declared, each picture shifted once) or, with
    --test-time-shift 0, their bare networks."""
    client, sgd = store["client"], store["runs"]["sgd"]
    experiment = client.get_experiment(sgd.info.experiment_id).name
    with working_in(store["root"]):
        cfg = small_cfg(
            store["root"],
            "model=mlp",
            "data.train_limit=1000",
            "trainer.test_time_shift=1",
            "trainer.seed=7",
            f"tracking.experiment={experiment}",
            "tracking.run_name=another-in-views",
        )
        train(cfg, output_dir=store["root"] / "another-in-views")
    (other,) = client.search_runs(
        [sgd.info.experiment_id], "attributes.run_name = 'another-in-views'"
    )
    members = f"{sgd.info.run_id},{other.info.run_id}"
    networks = [views.inner(load_model(f"models:/{_model_id(client, r)}")) for r in (sgd, other)]
    x = data.to_model_input(data.load_idx_dir(data.bundled_dir())["test_images"][:16])
    for asked, shift in (([], 1), (["--test-time-shift", "0"], 0)):
        name = f"both-in-views-{shift}"
        code, out, err = digits(
            store, "ensemble", "--runs", members, "--name", name, *asked, capsys=capsys
        )
        assert code == 0, err
        assert out.count("(its bare network: it ships views shifted 1 px)") == 2
        assert ("in views shifted 1 px (test-time augmentation); without them" in out) == bool(
            shift
        )
        (found,) = client.search_runs([sgd.info.experiment_id], f"attributes.run_name = '{name}'")
        run = client.get_run(found.info.run_id)
        assert run.data.params["test_time_shift"] == str(shift)
        if shift:
            assert run.data.tags["test_time_augmentation"] == views.describe(1)
            assert "single_view_test_accuracy" in run.data.metrics
            expected = np.mean([_views_mean(n, x) for n in networks], axis=0)
        else:
            assert "test_time_augmentation" not in run.data.tags
            assert "single_view_test_accuracy" not in run.data.metrics
            expected = np.mean([n.predict(x, verbose=0) for n in networks], axis=0)
        shipped = mlflow.keras.load_model(f"models:/{_model_id(client, run)}")
        np.testing.assert_allclose(shipped.predict(x, verbose=0), expected, atol=1e-5)


def test_an_ensemble_with_test_time_shifts_shifts_each_picture_once(store, capsys):
    client = store["client"]
    sgd, mlp = store["runs"]["sgd"], store["runs"]["mlp"]
    code, out, err = digits(
        store,
        "ensemble",
        "--runs",
        f"{sgd.info.run_id},{mlp.info.run_id}",
        "--test-time-shift",
        "1",
        "--experiment-name",
        "shifted",
        capsys=capsys,
    )
    assert code == 0, err
    (found,) = client.search_runs([client.get_experiment_by_name("shifted").experiment_id])
    run = client.get_run(found.info.run_id)
    assert run.data.params["test_time_shift"] == "1"
    assert run.data.tags["test_time_augmentation"] == views.describe(1)
    assert "single_view_test_accuracy" in run.data.metrics
    # sgd ships views already: its bare network joins, and the ensemble shifts once.
    networks = [views.inner(load_model(f"models:/{_model_id(client, r)}")) for r in (sgd, mlp)]
    x = data.to_model_input(data.load_idx_dir(data.bundled_dir())["test_images"][:16])
    expected = np.mean([_views_mean(n, x) for n in networks], axis=0)
    shipped = mlflow.keras.load_model(f"models:/{_model_id(client, run)}")
    np.testing.assert_allclose(shipped.predict(x, verbose=0), expected, atol=1e-5)
