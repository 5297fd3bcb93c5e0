"""Train one digit classifier, recorded in MLflow.

    python -m digit_experiments.train                       # the seed's CNN, Adam, dropout
    python -m digit_experiments.train model=mlp optimizer=sgd
    python -m digit_experiments.train --cfg job             # the composed config, instantly

The Hydra entry point is a few lines around `train(cfg)`, which tests and sweeps call too.
TensorFlow and MLflow are imported only once the config has been validated, so --help,
--cfg and a bad override answer at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import string
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from digit_experiments.config import Config, ConfigError, register_configs, validate

log = logging.getLogger(__name__)

# conf/ lives at the top of the repository, beside this package (editable install).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
LOGGED_REQUIREMENTS = ("tensorflow", "keras", "numpy", "mlflow")
VERSIONED = ("tensorflow", "keras", "mlflow", "hydra-core", "numpy", "digit-experiments")

register_configs()


def run_name(conf: Config) -> str:
    """What the run is, at a glance: e.g. cnn-adam-dropout."""
    return conf.tracking.run_name or "-".join(
        (conf.model.name, conf.optimizer.name, conf.regularization.name)
    )


def train(cfg: DictConfig, output_dir: Path | None = None) -> dict[str, float]:
    """One full run: validate, open the MLflow run, fit, evaluate, log. Returns metrics.

    `output_dir` holds the checkpoint and Hydra's files; under Hydra it is the job's
    output directory, otherwise a new temporary directory.
    """
    conf = validate(cfg)
    runtime = _hydra_runtime()
    _limit_threads(conf.trainer.threads or _fair_share(runtime))
    root = Path(runtime["cwd"]) if runtime else Path.cwd()
    if output_dir is None:
        output_dir = runtime["output_dir"] if runtime else tempfile.mkdtemp(prefix="digits-")
    output_dir = Path(output_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TensorFlow's C++ chatter down

    # Read the data while MLflow is imported and the store is opened: decompressing and
    # checksumming run outside the GIL, so the two overlap (about 1 s of a run's start).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="data") as pool:
        splits = pool.submit(_load_data, conf)
        return _tracked(cfg, conf, runtime, root, output_dir, splits.result)


def _load_data(conf: Config):
    from digit_experiments import data

    return data.load(conf.data, conf.trainer.seed)


def _tracked(cfg, conf: Config, runtime, root: Path, output_dir: Path, splits) -> dict:
    from digit_experiments import tracking
    from digit_experiments.redaction import redact_logs

    redact_logs()

    uri = tracking.resolve_tracking_uri(conf.tracking.uri, root)
    tracking.connect(uri)
    experiment_id = tracking.experiment_for_run(conf.tracking.experiment, uri, root)
    tags = {
        "model": conf.model.name,
        "optimizer": conf.optimizer.name,
        "regularization": conf.regularization.name,
        "overrides": " ".join(runtime["overrides"]) if runtime else "",
    }
    commit = tracking.git_commit()  # the code's commit, wherever it runs from
    if commit:
        tags["git_commit"] = commit
    # What produced the numbers, for reproducing them later.
    tags.update({f"version.{name}": metadata.version(name) for name in VERSIONED})
    name = run_name(conf)
    if runtime and runtime["multirun"]:
        # The sweep's comparison matches jobs to runs by these.
        tags.update(hydra_job_num=str(runtime["job_num"]), job_dir=str(output_dir))
        name = f"{name} #{runtime['job_num']}"
    # Bad data is refused here, before a run is opened (nothing to clean up in the store).
    loaded = splits()
    with tracking.tracked_run(experiment_id, name, tags, output_dir) as record:
        log.info(
            "MLflow run %s in %s (experiment %r)",
            record.run_id,
            tracking.redact(uri),
            conf.tracking.experiment,
        )
        resolved = OmegaConf.to_container(cfg, resolve=True)
        record.params(tracking.flatten(resolved))
        record.text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
        for hydra_file in sorted((output_dir / ".hydra").glob("*.yaml")):
            record.text(hydra_file.read_text(), f"config/.hydra/{hydra_file.name}")
        metrics = fit_and_evaluate(conf, record, output_dir, loaded)
        for job_log in output_dir.glob("*.log"):
            record.text(job_log.read_text(errors="replace"), f"logs/{job_log.name}")
        return metrics


def fit_and_evaluate(conf: Config, record, output_dir: Path, splits) -> dict[str, float]:
    """The steps of a run, in order: seed, data, model, fit, evaluate, report."""
    import keras
    import numpy as np

    from digit_experiments import callbacks, data, evaluate, models, pipeline, plots, schedules

    # One seed for NumPy, Python and TensorFlow: same config, same initial weights.
    keras.utils.set_random_seed(conf.trainer.seed)
    if conf.trainer.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    _log_datasets(record, splits)
    log.info("data: %s from %s", splits.sizes(), splits.source)

    model = models.build_model(conf.model, conf.regularization)
    steps_per_epoch = -(-len(splits.y_train) // conf.trainer.batch_size)
    rate = schedules.learning_rate(
        conf.trainer.schedule, conf.optimizer.learning_rate, conf.trainer.epochs, steps_per_epoch
    )
    model.compile(
        optimizer=models.build_optimizer(conf.optimizer, learning_rate=rate),
        # One-hot targets, so that label smoothing is available (same loss without it).
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=conf.trainer.label_smoothing),
        metrics=["accuracy"],
        jit_compile=conf.trainer.jit_compile,
    )
    record.params(
        {
            "model.num_params": model.count_params(),
            **{f"data.n_{split}": n for split, n in splits.sizes().items()},
        }
    )
    record.text(models.summary_text(model), "reports/model_summary.txt")

    record.checkpoint = output_dir / f"{conf.model.name}_best_model.h5"
    one_hot = np.eye(data.NUM_CLASSES, dtype=np.float32)
    fit_inputs = pipeline.fit_inputs(splits, one_hot, conf.trainer)
    started = time.perf_counter()
    history = model.fit(
        **fit_inputs,
        epochs=conf.trainer.epochs,
        callbacks=_callbacks(conf, record, callbacks),
        verbose=conf.trainer.verbose,
    )
    train_seconds = time.perf_counter() - started
    epochs_run = len(history.history["loss"])
    record.curves()
    # Evaluate and ship the best epoch's weights (the checkpoint), whatever early
    # stopping did: the logged model, the .h5 and the test metrics then agree.
    model.load_weights(record.checkpoint)
    record.file(record.checkpoint, "checkpoints")

    # One pass over the test set: the loss comes from the same predictions (as evaluate()
    # computes it: the compiled loss plus the weight penalties).
    probabilities = model.predict(splits.x_test, batch_size=conf.trainer.batch_size, verbose=0)
    test_loss = float(model.loss(one_hot[splits.y_test], probabilities)) + sum(
        float(penalty) for penalty in model.losses
    )
    y_pred = probabilities.argmax(axis=1)
    y_true = splits.y_test
    metrics = evaluate.classification_metrics(y_true, y_pred)
    val_accuracy = record.history.get("val_accuracy", [0.0])
    metrics.update(
        test_loss=float(test_loss),
        train_seconds=train_seconds,
        train_images_per_second=len(splits.y_train) * epochs_run / train_seconds,
        epochs_trained=epochs_run,
        best_epoch=int(max(range(len(val_accuracy)), key=val_accuracy.__getitem__)) + 1,
        best_val_accuracy=max(val_accuracy),
    )
    record.metrics(metrics)
    log.info(
        "test accuracy %.4f, macro F1 %.4f, %d epochs in %.0f s",
        metrics["test_accuracy"],
        metrics["test_f1_macro"],
        epochs_run,
        train_seconds,
    )

    cm = evaluate.confusion(y_true, y_pred)
    record.figure(plots.confusion_matrices(cm), "plots/confusion_matrix.png")
    record.text(evaluate.confusion_csv(cm), "reports/confusion_matrix.csv")
    report_text, report_dict = evaluate.report(y_true, y_pred)
    record.text(report_text, "reports/classification_report.txt")
    record.json(report_dict, "reports/classification_report.json")
    shown = evaluate.pick_samples(
        y_true, y_pred, conf.tracking.sample_predictions, conf.trainer.seed
    )
    record.figure(
        plots.sample_predictions(
            splits.x_test[shown], y_true[shown], y_pred[shown], probabilities[shown].max(axis=1)
        ),
        "plots/sample_predictions.png",
    )
    if conf.tracking.log_model:
        record.keras_model(model, splits.x_test[:5], probabilities[:5], _requirements())
    return metrics


class _QuietLegacyH5(logging.Filter):
    """Keras warns at every checkpoint that .h5 is a legacy format. .h5 is a deliberate
    choice (plain keras.models.load_model opens it anywhere), so drop that warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "saving your model as an HDF5 file" not in record.getMessage()


def _callbacks(conf: Config, record, callbacks) -> list:
    import keras

    from digit_experiments import schedules

    logging.getLogger("absl").addFilter(_QuietLegacyH5())

    stack = [
        keras.callbacks.ModelCheckpoint(
            str(record.checkpoint),
            monitor=conf.trainer.checkpoint.monitor,
            save_best_only=True,
            verbose=0,
        ),
        callbacks.EpochMetrics(record),
        callbacks.NanGuard(),  # after EpochMetrics, so the diverged epoch is on the curves
        *schedules.callbacks(conf.trainer.schedule, conf.optimizer.learning_rate),
    ]
    stop = conf.trainer.early_stopping
    if stop.enabled:
        stack.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                min_delta=stop.min_delta,
                restore_best_weights=stop.restore_best_weights,
                verbose=1,
            )
        )
    return stack


def _log_datasets(record, splits) -> None:
    """Each split as a run input (name, digest, source): the UI's dataset column."""
    import numpy as np

    for context, name, x, y in (
        ("training", "mnist-train", splits.x_train, splits.y_train),
        ("validation", "mnist-val", splits.x_val, splits.y_val),
        ("testing", "mnist-test", splits.x_test, splits.y_test),
    ):
        # MLflow's own digest hashes only the first few thousand values; hash all of it
        # (through the arrays' buffers: no copies of the 170 MB of training images).
        digest = hashlib.sha256(np.ascontiguousarray(x).data)
        digest.update(np.ascontiguousarray(y).data)
        digest = digest.hexdigest()[:16]
        record.dataset(x, y, name=name, source=splits.source, digest=digest, context=context)


def _fair_share(runtime: dict | None) -> int | None:
    """Threads per job when a launcher runs several jobs at once (joblib n_jobs > 1):
    the cores split between them, so they do not fight over the same cores."""
    if not runtime or runtime["parallel_jobs"] <= 1:
        return None  # TensorFlow's default: all cores
    return max(1, (os.cpu_count() or 1) // runtime["parallel_jobs"])


def _limit_threads(threads: int | None) -> None:
    """Cap TensorFlow's threads (before it starts its thread pools)."""
    if threads is None:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        # Already initialised: a later job in a reused worker process keeps the first cap.
        log.debug(
            "TensorFlow threads already set to %s",
            tf.config.threading.get_intra_op_parallelism_threads(),
        )
    log.info("TensorFlow limited to %d threads", threads)


def _requirements() -> list[str]:
    """Pinned requirements for the logged model (skips MLflow's slow inference step)."""
    return [f"{name}=={metadata.version(name)}" for name in LOGGED_REQUIREMENTS]


def _hydra_runtime() -> dict | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return {
        "cwd": hc.runtime.cwd,
        "output_dir": hc.runtime.output_dir,
        "overrides": list(hc.overrides.task),
        "multirun": str(hc.mode) == "RunMode.MULTIRUN",
        "job_num": hc.job.num if hc.job.get("num") is not None else 0,
        "parallel_jobs": int(OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1),
    }


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation accuracy (for sweepers)."""
    try:
        validate(cfg)
    except ConfigError as e:
        _refuse(e, exit_code=2)
    from digit_experiments.data import DataError
    from digit_experiments.tracking import Terminated, TrackingUnavailable

    try:
        return train(cfg)["best_val_accuracy"]
    except (TrackingUnavailable, DataError) as e:
        _refuse(e, exit_code=1)
    except RuntimeError as e:
        from digit_experiments.callbacks import TrainingDiverged

        if not isinstance(e, TrainingDiverged):
            raise
        _refuse(e, exit_code=1, message=f"{e}; the MLflow run ended FAILED with its curves")
    except KeyboardInterrupt as e:
        # The run is already ended KILLED, its checkpoint and curves logged. Exit as a
        # process killed by that signal would (128 + signal number).
        reason = str(e) or "interrupted (SIGINT)"
        _refuse(
            e,
            exit_code=143 if isinstance(e, Terminated) else 130,
            message=f"{reason}; the MLflow run ended KILLED with what it had logged",
        )


def _refuse(error: BaseException, exit_code: int, message: str | None = None) -> None:
    """A user's mistake or a stop: one clear line, no traceback (in a sweep, the error
    goes to Hydra: a failed job is recorded and the sweep goes on; Ctrl-C ends it)."""
    runtime = _hydra_runtime()
    if runtime and runtime["multirun"]:
        raise error
    print(f"digits-train: {message or error}", file=sys.stderr)
    sys.exit(exit_code)


def cli() -> None:
    """Console entry point (`digits-train`, `python -m digit_experiments.train`)."""
    if _fast_help(sys.argv[1:]):
        return
    from digit_experiments.redaction import redact_logs

    redact_logs()  # before Hydra logs anything
    main()


def _fast_help(argv: list[str]) -> bool:
    """`--help` [overrides...] rendered without Hydra's app_help, which lists every config
    group (its own and its plugins' included) by deep-copying the config store 130 times:
    1.5 s on 2 cores, for text our template does not show. Same template, same composed
    config, so the output is Hydra's own; anything else (other flags, a bad override)
    goes to Hydra. Returns whether it printed the help."""
    if not {"--help", "-h"} & set(argv):
        return False
    overrides = [a for a in argv if a not in ("--help", "-h")]
    if any(a.startswith("-") for a in overrides):
        return False
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - Hydra's own path reports it properly
        return False
    template = cfg.hydra.help.template
    with open_dict(cfg):
        del cfg["hydra"]
    print(string.Template(template).safe_substitute(CONFIG=OmegaConf.to_yaml(cfg)))
    return True


if __name__ == "__main__":
    cli()
