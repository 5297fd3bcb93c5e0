"""The registry, predict, serve and export, on a store with a weak MLP and a better CNN
trained for real (small slices) as two jobs of one sweep."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error

import keras
import mlflow
import mlflow.keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from digit_experiments import cli
from digit_experiments.app.run import train
from digit_experiments.core import data
from digit_experiments.errors import ModelError
from digit_experiments.inference import fetch
from digit_experiments.inference.loading import load_model
from digit_experiments.inference.predictor import Predictor, read_image

from .conftest import clean_env, http, mlflow_process, run_cli_imports, small_cfg, working_in

NAME = "mnist-digit-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two runs of one sweep (MLP ~85%, CNN ~96%) and a run without a logged model."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    with working_in(root):
        train(
            small_cfg(
                root, "model=mlp", "tracking.log_model=false", "tracking.experiment=no-models"
            ),
            output_dir=root / "nomodel",
        )
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("digit-experiments")
        experiment_id = (
            experiment_id.experiment_id
            if experiment_id
            else client.create_experiment(
                "digit-experiments", artifact_location=(root / "mlruns" / "de").as_uri()
            )
        )
        parent = client.create_run(experiment_id, tags={"sweep": "true"}, run_name="sweep")
        child = f"tracking.parent_run_id={parent.info.run_id}"
        train(small_cfg(root, "model=mlp", "data.train_limit=1000", child), output_dir=root / "mlp")
        train(
            small_cfg(root, "model=cnn", "data.train_limit=6000", "trainer.epochs=3", child),
            output_dir=root / "cnn",
        )
        client.set_terminated(parent.info.run_id)
    mlflow.set_tracking_uri(uri)
    runs = {
        r.data.tags["model"]: r
        for r in client.search_runs(
            [experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
    }
    return {"root": root, "uri": uri, "client": client, "runs": runs}


def digits(store, *args, capsys):
    """`digits ARGS` in-process; returns (exit code, stdout, stderr)."""
    code = cli.main(["--tracking-uri", store["uri"], *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _versions(store):
    return sorted(int(v.version) for v in store["client"].search_model_versions(f"name = '{NAME}'"))


def _alias(store, alias):
    return store["client"].get_model_version_by_alias(NAME, alias)


def test_promote_champion_challenger_and_idempotence(store, capsys):
    cnn, mlp = store["runs"]["cnn"], store["runs"]["mlp"]
    code, out, _ = digits(store, "promote", "--dry-run", capsys=capsys)
    assert code == 0 and "dry run: nothing changed" in out and cnn.info.run_id in out
    assert _versions(store) == []

    # The latest sweep's best run becomes version 1, champion.
    code, out, _ = digits(store, "promote", capsys=capsys)
    assert code == 0 and "version 1 is now 'champion'" in out
    champion = _alias(store, "champion")
    assert champion.run_id == cnn.info.run_id
    assert champion.tags["model_family"] == "cnn"
    assert float(champion.tags["test_accuracy"]) == pytest.approx(
        cnn.data.metrics["test_accuracy"], abs=1e-4
    )
    assert "MNIST test set" in champion.description

    # Promoting the champion again creates nothing.
    code, out, _ = digits(store, "promote", capsys=capsys)
    assert code == 0 and "already champion" in out and _versions(store) == [1]

    # A worse model becomes challenger, and says why.
    code, out, _ = digits(store, "promote", "--filter", "tags.model = 'mlp'", capsys=capsys)
    assert code == 0 and "not promoted" in out and "does not beat" in out
    assert _versions(store) == [1, 2]
    assert _alias(store, "challenger").run_id == mlp.info.run_id
    assert str(_alias(store, "champion").version) == "1"

    # --force moves the alias to the existing version: no third version.
    code, out, _ = digits(
        store, "promote", "--filter", "tags.model = 'mlp'", "--force", capsys=capsys
    )
    assert code == 0 and "forced" in out and _versions(store) == [1, 2]
    assert str(_alias(store, "champion").version) == "2"

    # The better CNN beats it back, evaluated on the same (full) test set.
    code, out, _ = digits(
        store, "promote", "--parent", cnn.data.tags["mlflow.parentRunId"], capsys=capsys
    )
    assert code == 0 and "beats" in out and str(_alias(store, "champion").version) == "1"


def test_promote_by_a_loss_takes_the_lowest(store, capsys):
    cnn, mlp = store["runs"]["cnn"], store["runs"]["mlp"]
    assert cnn.data.metrics["val_loss"] < mlp.data.metrics["val_loss"]
    code, out, _ = digits(store, "promote", "--dry-run", "--metric", "val_loss", capsys=capsys)
    assert code == 0 and "dry run: nothing changed" in out
    assert cnn.info.run_id in out and mlp.info.run_id not in out


def test_promote_ranks_a_run_measured_on_a_test_slice_after_the_whole_test_set(store, capsys):
    """A run tested on all 10,000 pictures against a better-looking one tested on 500."""
    root, client = store["root"], store["client"]
    with working_in(root):
        train(
            small_cfg(
                root,
                "model=mlp",
                "data.train_limit=1000",
                "data.test_limit=null",
                "tracking.experiment=slices",
            ),
            output_dir=root / "whole",
        )
    experiment_id = client.get_experiment_by_name("slices").experiment_id
    (whole,) = client.search_runs([experiment_id])
    sliced = client.create_run(experiment_id, run_name="sliced")
    client.log_metric(sliced.info.run_id, "test_accuracy", 1.0)
    client.log_param(sliced.info.run_id, "data.test_limit", "500")
    client.set_terminated(sliced.info.run_id)

    code, out, _ = digits(store, "promote", "--experiment", "slices", "--dry-run", capsys=capsys)
    assert code == 0
    assert f"candidate: run {whole.info.run_id}" in out
    assert "1 run(s) with a better logged test_accuracy measured it on a slice" in out
    assert sliced.info.run_id in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "nowhere"], "no experiment named 'nowhere'"),
        (["--experiment", "no-models"], "none of the 1 runs logged a model"),
        (["--experiment", "digit-experiments", "--metric", "nonsense"], "no run has a metric"),
        (["--experiment", "digit-experiments", "--filter", "tags.model == "], "--filter"),
        (["--parent", "0123456789abcdef"], "no run '0123456789abcdef'"),
    ],
)
def test_promote_refuses_bad_requests_and_leaves_the_registry_alone(store, capsys, args, message):
    before = _versions(store)
    code, _, err = digits(store, "promote", *args, capsys=capsys)
    assert code == 1 and message in err
    assert _versions(store) == before


@pytest.fixture(scope="module")
def pictures(store):
    """200 MNIST test digits as PNG files: as they are, inverted (dark ink on light paper)
    and 4x larger, plus the same as a .npy array."""
    arrays = data.load_idx_dir(data.bundled_dir())
    images, labels = arrays["test_images"][:200], arrays["test_labels"][:200]
    folders = {name: store["root"] / "pictures" / name for name in ("plain", "inverted_4x")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folders["plain"] / f"{i:03d}.png")
        big = Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BICUBIC)
        big.save(folders["inverted_4x"] / f"{i:03d}.png")
    np.save(store["root"] / "pictures" / "batch.npy", images)
    return folders, images, labels


def test_predict_reads_pictures_like_mnist_in_both_polarities_and_any_size(store, pictures, capsys):
    folders, images, labels = pictures
    predictor = Predictor.load(f"models:/{NAME}@champion")
    raw = predictor.probabilities(data.to_model_input(images)).argmax(axis=1)
    raw_accuracy = np.mean(raw == labels)
    assert raw_accuracy > 0.85
    for name, folder in folders.items():
        files = sorted(folder.glob("*.png"))
        code, out, err = digits(
            store,
            "predict",
            "--model",
            f"models:/{NAME}@champion",
            "--json",
            *map(str, files),
            capsys=capsys,
        )
        assert code == 0, err
        assert "Downloading artifacts" not in err  # no MLflow progress bar in the answer
        results = json.loads(out)
        assert [r["file"] for r in results] == [str(f) for f in files]
        assert all(len(r["probabilities"]) == 10 for r in results)
        accuracy = np.mean([r["digit"] for r in results] == labels)
        assert accuracy >= raw_accuracy - 0.05, name

    code, out, _ = digits(
        store,
        "predict",
        "--model",
        f"models:/{NAME}/1",
        str(store["root"] / "pictures" / "batch.npy"),
        capsys=capsys,
    )
    lines = out.splitlines()
    assert code == 0 and len(lines) == 200 and lines[0].split()[0].endswith("batch.npy[0]")
    assert np.mean([int(line.split()[1]) for line in lines] == labels) >= raw_accuracy - 0.01


def test_a_png_and_an_npy_of_the_same_digit_get_the_same_answer(store, pictures, tmp_path):
    # Dark ink on light paper, 28x28: as PNG files, and as arrays of bytes and of floats.
    _, images, _ = pictures
    paper = 255 - images[:20]
    for i, image in enumerate(paper):
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
    np.save(tmp_path / "bytes.npy", paper)
    np.save(tmp_path / "floats.npy", paper.astype(np.float32) / 255.0)
    predictor = Predictor.load(f"models:/{NAME}@champion")
    from digit_experiments.inference.predictor import read_pictures

    answers = {
        name: predictor.predict_files(read_pictures(files))
        for name, files in {
            "png": sorted(tmp_path.glob("*.png")),
            "bytes": [tmp_path / "bytes.npy"],
            "floats": [tmp_path / "floats.npy"],
        }.items()
    }
    png = np.array([p.probabilities for _, p in answers["png"]])
    for name in ("bytes", "floats"):
        np.testing.assert_allclose(
            np.array([p.probabilities for _, p in answers[name]]), png, atol=1e-5
        )
    # ... and the same as MNIST's own light-on-dark digits: the polarity rule holds.
    direct = predictor.probabilities(data.to_model_input(images[:20]))
    np.testing.assert_allclose(png, direct, atol=1e-5)


def test_predict_refuses_bad_input_with_a_clear_error(store, pictures, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not a picture")
    Image.fromarray(np.full((40, 40), 230, np.uint8)).save(tmp_path / "blank.png")
    np.save(tmp_path / "flat.npy", np.zeros(3))
    good = str(sorted(pictures[0]["plain"].glob("*.png"))[0])
    cases = [
        ([f"models:/{NAME}@champion", str(tmp_path / "notes.png")], "notes.png: not an image"),
        (
            [f"models:/{NAME}@champion", str(tmp_path / "blank.png")],
            "blank.png: the image is empty or all one colour",
        ),
        ([f"models:/{NAME}@champion", str(tmp_path / "flat.npy")], "flat.npy: expected images"),
        ([f"models:/{NAME}@champion", str(tmp_path / "missing.png")], "missing.png: file not"),
        ([f"models:/{NAME}@understudy", good], "alias understudy not found"),
        (["models:/no-such-model/1", good], "no-such-model"),
        ([str(tmp_path / "gone.h5"), good], "gone.h5: model file not found"),
    ]
    for (model, file), message in cases:
        code, _, err = digits(store, "predict", "--model", model, file, capsys=capsys)
        assert code == 1 and message in err, (message, err)


def test_predict_resolves_a_store_uri_in_a_second_process(store, pictures, tmp_path, capsys):
    """`digits predict` with a models:/ URI: MLflow works in a child process while the
    command imports TensorFlow (inference.fetch), so the command itself never imports
    MLflow, and answers as the in-process Predictor does. A child that gives no answer
    leaves the work to the in-process loader; an error of the child's keeps its kind."""
    files = [str(f) for f in sorted(pictures[0]["inverted_4x"].glob("*.png"))[:5]]
    expected = Predictor.load(f"models:/{NAME}@champion").predict([read_image(f) for f in files])
    model = ["--model", f"models:/{NAME}@champion", "--json", *files]
    result, imported = run_cli_imports(
        "--tracking-uri",
        store["uri"],
        "predict",
        *model,
        cwd=tmp_path,
        module="digit_experiments.cli",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout)
    np.testing.assert_allclose(
        [a["probabilities"] for a in answers], [p.probabilities for p in expected], atol=1e-5
    )
    if fetch._cpus() > 1:
        assert "mlflow" not in imported and "keras" in imported

    # A child that says nothing (here: not Python at all): the same answer, in-process.
    child = fetch.Fetch(f"models:/{NAME}@champion", store["uri"])
    assert child.keras_file().endswith("model.keras")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "executable", "/bin/true")
        assert fetch.Fetch(f"models:/{NAME}@champion", store["uri"]).keras_file() is None
        code, out, err = digits(store, "predict", *model, capsys=capsys)
    assert code == 0, err
    assert [a["digit"] for a in json.loads(out)] == [a["digit"] for a in answers]

    # The child's TrackingUnavailable, as the command said it before the child existed.
    code = cli.main(["--tracking-uri", "http://127.0.0.1:9", "predict", *model])
    assert code == 1 and "tracking server http://127.0.0.1:9 is unreachable" in (
        capsys.readouterr().err
    )


def test_a_model_file_with_code_in_it_is_refused(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Lambda(lambda x: x * 2.0),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    for name in ("lambda.keras", "lambda.h5"):
        model.save(tmp_path / name)
        with pytest.raises(ModelError, match="Lambda"):
            load_model(str(tmp_path / name))


def test_export_writes_an_h5_that_plain_keras_loads_elsewhere(store, pictures, tmp_path, capsys):
    out = tmp_path / "cnn_best_model.h5"
    code, _, err = digits(
        store, "export", "--model", f"models:/{NAME}@champion", "--out", str(out), capsys=capsys
    )
    assert code == 0, err
    images = data.to_model_input(pictures[1][:20])
    np.save(tmp_path / "x.npy", images)
    script = (
        "import keras, numpy as np; m = keras.models.load_model('cnn_best_model.h5'); "
        "np.save('p.npy', m.predict(np.load('x.npy'), verbose=0))"
    )
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = Predictor.load(f"models:/{NAME}@champion").probabilities(images)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, atol=1e-5)


def test_mlflow_models_serve_answers_pictures_like_the_predictor_in_process(store, pictures):
    """A real `mlflow models serve` on the champion reads base64 PNGs (MNIST's own digits
    and 4x larger ones, dark on light) as the Predictor does in-process, and answers bad
    input with HTTP 400 and a message that says what is wrong."""
    folders, _, labels = pictures
    files = [f for folder in folders.values() for f in sorted(folder.glob("*.png"))[:8]]
    expected = Predictor.load(f"models:/{NAME}@champion").predict([read_image(f) for f in files])
    records = [{"image": base64.b64encode(f.read_bytes()).decode()} for f in files]
    tensor = data.to_model_input(pictures[1][:1]).tolist()
    bad = {
        "not a picture": (
            {"dataframe_records": [records[0], {"image": base64.b64encode(b"notes").decode()}]},
            "image 1: not an image file (PNG, JPEG, ...); its first bytes are b'notes'",
        ),
        "no image column": ({"dataframe_records": [{"picture": records[0]["image"]}]}, "['image']"),
        "an MNIST tensor": ({"inputs": tensor}, "mlflow.keras.load_model"),
    }
    with mlflow_process(
        "models",
        "serve",
        "-m",
        f"models:/{NAME}@champion",
        "--env-manager",
        "local",
        cwd=store["root"],
        timeout=180,
        env={"MLFLOW_TRACKING_URI": store["uri"]},
    ) as base:
        answer = json.loads(http(f"{base}/invocations", {"dataframe_records": records}))
        refused = {name: _refused(f"{base}/invocations", body) for name, (body, _) in bad.items()}
    predictions = answer["predictions"]
    assert [p["digit"] for p in predictions] == [p.digit for p in expected]
    np.testing.assert_allclose(
        np.array([p["probabilities"] for p in predictions]),
        np.array([p.probabilities for p in expected]),
        atol=1e-5,
    )
    assert np.mean([p["digit"] for p in predictions] == np.tile(labels[:8], 2)) >= 0.8
    for name, (status, error) in refused.items():
        assert status == 400 and bad[name][1] in error["message"], (name, error)
        assert "Traceback" not in json.dumps(error), name
    # Bad pictures are said in one line, without the request printed before it.
    assert refused["not a picture"][1]["message"] == bad["not a picture"][1]


def _refused(url: str, body: dict) -> tuple[int, dict]:
    """POST a body the server must refuse: (HTTP status, the JSON error)."""
    try:
        http(url, body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    raise AssertionError(f"the server accepted {str(body)[:80]}")


def test_the_logged_model_is_still_the_keras_network(store, pictures):
    network = mlflow.keras.load_model(f"models:/{NAME}@champion")
    assert isinstance(network, keras.Model)
    images = data.to_model_input(pictures[1][:20])
    np.testing.assert_allclose(
        network.predict(images, verbose=0),
        Predictor.load(f"models:/{NAME}@champion").probabilities(images),
        atol=1e-5,
    )
