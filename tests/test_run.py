"""One small run, end to end, checked through MlflowClient: status, params, metrics,
artifacts, datasets, the checkpoint and the logged model."""

from __future__ import annotations

import base64
import io
import json

import keras
import mlflow
import mlflow.keras
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from digit_experiments.app.run import train
from digit_experiments.core import data, models, pipeline
from digit_experiments.core.config import validate
from digit_experiments.inference import served
from digit_experiments.inference.predictor import Predictor
from digit_experiments.tracking.runlog import flatten

from .conftest import EPOCH_METRICS, all_artifacts, small_cfg

EXPECTED_ARTIFACTS = {
    "checkpoints/cnn_best_model.h5",
    "config/config.yaml",
    "plots/learning_curves.png",
    "plots/confusion_matrix.png",
    "plots/sample_predictions.png",
    "reports/confusion_matrix.csv",
    "reports/classification_report.txt",
    "reports/classification_report.json",
    "reports/model_summary.txt",
    "reports/history.json",
}
TEST_METRICS = {
    "test_accuracy",
    "test_loss",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "train_seconds",
    "train_images_per_second",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-epoch CNN run on 2,000/500 images; also keeps the in-memory model."""
    store = tmp_path_factory.mktemp("store")
    cfg = small_cfg(store, "trainer.epochs=2")
    built = []
    build = models.build_model

    def capture(*args):
        built.append(build(*args))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(store)
        mp.setattr(models, "build_model", capture)
        metrics = train(cfg, output_dir=store / "out")
    uri = f"sqlite:///{store}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    run = client.search_runs(client.get_experiment_by_name("digit-experiments").experiment_id)[0]
    return {
        "cfg": cfg,
        "metrics": metrics,
        "run": run,
        "client": client,
        "model": built[0],
        "store": store,
    }


def test_run_finishes_with_a_name_and_tags(finished):
    run = finished["run"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cnn-adam-dropout"
    tags = run.data.tags
    assert (tags["model"], tags["optimizer"], tags["regularization"]) == ("cnn", "adam", "dropout")
    assert "overrides" in tags
    # Its description in MLflow's UI: what it is and how it did.
    accuracy = 100 * run.data.metrics["test_accuracy"]
    assert tags["mlflow.note.content"].startswith(
        f"cnn, adam, dropout: {accuracy:.2f}% test accuracy, macro F1 "
    )


def test_params_are_the_whole_resolved_config(finished):
    params = finished["run"].data.params
    flat = flatten(OmegaConf.to_container(finished["cfg"], resolve=True))
    assert {k: str(v) for k, v in flat.items()}.items() <= params.items()
    assert params["trainer.epochs"] == "2"
    assert params["model.conv_filters"] == "[32, 64]"
    assert params["model.num_params"] == "225034"
    assert (params["data.n_train"], params["data.n_val"], params["data.n_test"]) == (
        "1800",
        "200",
        "500",
    )


def test_every_epoch_is_a_metric_step(finished):
    client, run_id = finished["client"], finished["run"].info.run_id
    for key in EPOCH_METRICS:
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key
    lr = client.get_metric_history(run_id, "learning_rate")
    assert all(m.value == pytest.approx(0.001) for m in lr)


def test_test_metrics_are_logged(finished):
    metrics = finished["run"].data.metrics
    assert TEST_METRICS <= metrics.keys()
    assert {f"test_f1_class_{c}" for c in range(10)} <= metrics.keys()
    assert 0.5 < metrics["test_accuracy"] <= 1.0  # 2 epochs on 1,800 images: well above chance
    assert metrics["test_accuracy"] == pytest.approx(finished["metrics"]["test_accuracy"])
    assert metrics["epochs_trained"] == 2


def test_every_artifact_is_there(finished):
    paths = set(all_artifacts(finished["client"], finished["run"].info.run_id))
    assert EXPECTED_ARTIFACTS <= paths, EXPECTED_ARTIFACTS - paths


def test_confusion_matrix_and_report_match_the_test_set(finished):
    client, run_id = finished["client"], finished["run"].info.run_id
    csv = mlflow.artifacts.load_text(f"runs:/{run_id}/reports/confusion_matrix.csv")
    rows = [list(map(int, line.split(",")[1:])) for line in csv.strip().splitlines()[1:]]
    cm = np.array(rows)
    assert cm.shape == (10, 10) and cm.sum() == 500
    accuracy = finished["run"].data.metrics["test_accuracy"]
    assert np.trace(cm) / 500 == pytest.approx(accuracy)
    report = mlflow.artifacts.load_dict(f"runs:/{run_id}/reports/classification_report.json")
    assert report["accuracy"] == pytest.approx(accuracy)
    assert client is not None


def test_checkpoint_reloads_in_plain_keras_and_predicts_like_the_trained_model(finished):
    run_id = finished["run"].info.run_id
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{run_id}/checkpoints/cnn_best_model.h5", dst_path=str(finished["store"] / "dl")
    )
    reloaded = keras.models.load_model(local)
    x = data.load(validate(finished["cfg"]).data, seed=42).x_test
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), finished["model"].predict(x, verbose=0), atol=1e-5
    )


def test_logged_model_serves_pictures_and_keeps_the_keras_network(finished):
    run = finished["run"]
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list"
    )
    assert len(logged) == 1 and logged[0].source_run_id == run.info.run_id
    model_uri = f"models:/{logged[0].model_id}"
    info = mlflow.models.get_model_info(model_uri)
    assert info.flavors["python_function"]["loader_module"] == "digit_experiments.inference.served"
    columns = [(c["name"], c["type"]) for c in info.signature.inputs.to_dict()]
    assert columns == [("image", "binary")]
    columns = [(c["name"], c["type"]) for c in info.signature.outputs.to_dict()]
    assert columns == [("digit", "long"), ("probabilities", "array")]

    # The input example is a real picture, which the model reads.
    loaded = mlflow.pyfunc.load_model(model_uri)
    example = loaded.input_example
    assert Image.open(io.BytesIO(example["image"][0])).size == (28, 28)
    assert len(loaded.predict(example)) == len(example)

    # Pictures, as bytes or base64 text, get the Keras network's own answer.
    network = finished["model"]
    x = data.load(validate(finished["cfg"]).data, seed=42).x_test[:20]
    pngs = [served.png(image) for image in x]
    expected = network.predict(x, verbose=0)
    for column in (pngs, [base64.b64encode(png).decode() for png in pngs]):
        answer = loaded.predict(pd.DataFrame({"image": column}))
        assert list(answer["digit"]) == list(expected.argmax(axis=1))
        np.testing.assert_allclose(np.array(answer["probabilities"].tolist()), expected, atol=1e-5)

    # ... and the network itself is still there, for arrays in MNIST format.
    keras_model = mlflow.keras.load_model(model_uri)
    assert isinstance(keras_model, keras.Model)
    np.testing.assert_allclose(keras_model.predict(x, verbose=0), expected, atol=1e-5)


def test_the_predictor_gives_what_keras_predict_gives(finished):
    # Its fast path (predict_on_batch, 256 at a time) against Keras' own predict, over
    # more than one chunk and a ragged last one.
    network = finished["model"]
    x = data.load(validate(finished["cfg"]).data, seed=42).x_test
    x = np.concatenate([x, x])[:600]
    np.testing.assert_allclose(
        Predictor(network).probabilities(x), network.predict(x, verbose=0), atol=1e-5
    )
    assert Predictor(network).probabilities(x[:0]).shape == (0, 10)


def test_test_loss_is_what_keras_evaluate_reports(finished):
    # The run computes the test loss from its one pass of predictions.
    x_test = data.load(validate(finished["cfg"]).data, seed=42)
    one_hot = np.eye(10, dtype=np.float32)[x_test.y_test]
    loss, _ = finished["model"].evaluate(x_test.x_test, one_hot, verbose=0)
    assert finished["metrics"]["test_loss"] == pytest.approx(loss, rel=1e-4)


def test_datasets_are_the_run_inputs(finished):
    inputs = finished["run"].inputs.dataset_inputs
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs
    }
    assert set(by_context) == {"training", "validation", "testing"}
    assert by_context["training"].name == "mnist-train"
    assert len(by_context["training"].digest) == 16
    assert "resources/mnist" in json.loads(by_context["testing"].source)["uri"]


def test_a_schedule_moves_the_logged_learning_rate(tmp_path):
    cfg = small_cfg(
        tmp_path,
        "model=mlp",
        "trainer.epochs=3",
        "trainer.schedule.name=cosine",
        "trainer.label_smoothing=0.1",
        "tracking.log_model=false",
    )
    train(cfg, output_dir=tmp_path / "out")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("digit-experiments").experiment_id])
    rates = [
        m.value
        for m in sorted(
            client.get_metric_history(run.info.run_id, "learning_rate"), key=lambda m: m.step
        )
    ]
    assert len(rates) == 3 and rates[0] > rates[1] > rates[2] > 0
    assert rates[0] < 0.001  # already below the peak after the first epoch
    assert run.data.params["trainer.label_smoothing"] == "0.1"


def test_the_best_epoch_is_the_checkpoints_whatever_it_monitors(tmp_path):
    from digit_experiments.app.run import checkpoint_epoch

    history = {"val_accuracy": [0.9, 0.95, 0.95], "val_loss": [0.5, 0.3, 0.2]}
    assert checkpoint_epoch(history, "val_accuracy") == 2  # the first of a tie: Keras'
    assert checkpoint_epoch(history, "val_loss") == 3  # the lowest loss

    cfg = small_cfg(
        tmp_path,
        "model=mlp",
        "trainer.epochs=3",
        "trainer.checkpoint.monitor=val_loss",
        "tracking.log_model=false",
    )
    metrics = train(cfg, output_dir=tmp_path / "out")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs(["1"])
    losses = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    lowest = min(losses, key=lambda m: m.value)
    assert metrics["best_epoch"] == run.data.metrics["best_epoch"] == lowest.step
    assert metrics["best_val_loss"] == run.data.metrics["best_val_loss"] == lowest.value


@pytest.mark.parametrize(
    "options",
    [
        ["trainer.pipeline=arrays"],
        ["trainer.jit_compile=true"],
        ["trainer.steps_per_execution=4"],  # 2,000 images: 63 steps, the last call runs 3
    ],
)
def test_pipeline_and_xla_options_train_as_well(tmp_path, options, recwarn):
    cfg = small_cfg(tmp_path, "model=mlp", "trainer.epochs=2", *options)
    metrics = train(cfg, output_dir=tmp_path / "out")
    # Neither pipeline gets Keras' "shuffle=True ... will be ignored" warning.
    assert not [w for w in recwarn if "shuffle" in str(w.message)]
    # 2,000 images, 2 epochs: the default (tf.data, no XLA) gets about 0.85.
    assert metrics["test_accuracy"] > 0.75
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    key, value = options[0].split("=")
    assert run.data.params[key] == value.replace("true", "True")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2  # per epoch


def test_the_dataset_pipeline_gives_every_picture_each_epoch_without_autotuning(tmp_path):
    """tf.data's autotuning thread made a third of the epochs stall at their start
    (benchmarks/stalls.py), so trainer.pipeline=dataset sizes its prefetch itself; it
    still gives every training picture once an epoch, in a new order each time."""
    cfg = validate(small_cfg(tmp_path, "trainer.pipeline=dataset", "trainer.batch_size=64"))
    splits = data.load(cfg.data, cfg.trainer.seed)
    inputs = pipeline.fit_inputs(splits, np.eye(10, dtype=np.float32), cfg.trainer)
    train, val = inputs["x"], inputs["validation_data"]
    assert train.options().autotune.enabled is False
    assert val.options().autotune.enabled is False
    epochs = [np.concatenate([y.numpy().argmax(1) for _, y in train]) for _ in range(2)]
    for labels in epochs:
        assert np.array_equal(np.bincount(labels), np.bincount(splits.y_train))
    assert not np.array_equal(epochs[0], epochs[1])
    assert sum(len(y) for _, y in val) == len(splits.y_val)


def _capture_models(monkeypatch) -> list:
    built, build = [], models.build_model

    def capture(*args):
        built.append(build(*args))
        return built[-1]

    monkeypatch.setattr(models, "build_model", capture)
    return built


def test_ema_checkpoints_and_ships_the_averaged_weights(tmp_path):
    """trainer.ema: the best checkpoint (and so the test metrics and the logged model)
    holds the optimizer's moving average of the weights, while the state kept for a
    resume holds the trained weights themselves, with the averages among its optimizer
    variables."""
    out = tmp_path / "out"
    cfg = small_cfg(
        tmp_path,
        "model=mlp",
        "trainer.epochs=1",
        "trainer.ema=0.9",
        "tracking.log_model=false",
    )
    metrics = train(cfg, output_dir=out)
    assert metrics["test_accuracy"] > 0.7
    best = keras.models.load_model(out / "mlp_best_model.h5", compile=False)

    # The resume state: a fresh network with the same optimizer, loaded as resume does.
    conf = validate(cfg)
    fresh = models.build_model(conf.model, conf.regularization, (28, 28, 1), 10)
    from digit_experiments.core import training
    from digit_experiments.tracking import resume

    training.compile_model(fresh, conf, steps_per_epoch=1)
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(out / resume.WEIGHTS)
    averages = [np.asarray(v) for v in fresh.optimizer._model_variables_moving_average]
    trained = [np.asarray(v) for v in fresh.trainable_variables]
    shipped = [np.asarray(v) for v in best.trainable_variables]
    assert len(averages) == len(shipped) == len(trained)
    for average, ship in zip(averages, shipped):
        np.testing.assert_allclose(ship, average, rtol=1e-6, atol=1e-7)
    # Averaging changed the weights: the shipped ones are not the last trained ones.
    assert max(float(np.abs(a - t).max()) for a, t in zip(shipped, trained)) > 1e-4
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])[0]
    assert run.data.params["trainer.ema"] == "0.9"


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_on_cpu_with_float32_probabilities(tmp_path, monkeypatch, precision):
    built = _capture_models(monkeypatch)
    cfg = small_cfg(tmp_path, "model=cnn", "trainer.epochs=1", f"trainer.precision={precision}")
    try:
        metrics = train(cfg, output_dir=tmp_path / "out")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert metrics["test_accuracy"] > 0.7
    (model,) = built
    assert model.get_layer("conv_1").compute_dtype == precision.removeprefix("mixed_")
    assert model.get_layer("conv_1").variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    # The shipped model answers in float32 wherever it is loaded.
    loaded = mlflow.keras.load_model(f"runs:/{_only_run(tmp_path).info.run_id}/model")
    assert loaded.predict(np.zeros((1, 28, 28, 1), "float32"), verbose=0).dtype == np.float32


def test_a_run_after_a_mixed_precision_run_is_float32_again(tmp_path, monkeypatch):
    """Keras' precision policy is global to the process; a sweep's next job must not
    inherit the previous job's."""
    built = _capture_models(monkeypatch)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        cfg = small_cfg(tmp_path, "model=mlp", "trainer.epochs=1", "tracking.log_model=false")
        train(cfg, output_dir=tmp_path / "out")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert built[0].get_layer("dense_1").compute_dtype == "float32"


def _only_run(store):
    uri = f"sqlite:///{store}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    (run,) = MlflowClient(uri).search_runs(["1"])
    return run
