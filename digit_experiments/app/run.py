"""One run, as a short list of steps: validate, check the store, read the data, open the
MLflow run, fit, evaluate, log. `train(cfg)` is what the Hydra entry point, the sweeps
and the tests all call.

Order matters for the user: a bad config, an absent tracking server and bad data are
each refused before a run is opened (and the first two before TensorFlow is imported,
bad data before MLflow is).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from digit_experiments.app import finetune
from digit_experiments.app.runtime import Runtime, hydra_runtime
from digit_experiments.core.config import Config, validate
from digit_experiments.errors import (
    DigitsError,
    ParentRunMissing,
    TrackingUnavailable,
)
from digit_experiments.reporting.compare import shown_overrides
from digit_experiments.tracking import resume, search, store
from digit_experiments.tracking.redaction import redact, redact_logs
from digit_experiments.tracking.runlog import flatten, log_params

log = logging.getLogger(__name__)


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
    try:
        return _train(cfg, output_dir)
    except DigitsError as e:
        if getattr(e, "run_id", None) is None:
            record_refused(cfg, e)
        raise


def record_refused(cfg: DictConfig, error: BaseException) -> None:
    """A sweep's job refused before its run was opened (a bad value, bad data, a run it
    cannot resume) is recorded by the job itself, as a FAILED child run carrying the
    error: the sweep's comparison reads MLflow, and the driver may not share a disk with
    the worker that ran the job. Outside sweeps, or when the store itself is the
    problem, nothing is recorded (the user sees the error)."""
    runtime = hydra_runtime()
    parent = OmegaConf.select(cfg, "tracking.parent_run_id", default=None)
    if not (runtime and runtime.multirun and parent):
        return
    if isinstance(error, (TrackingUnavailable, ParentRunMissing)):
        return
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    try:
        uri = store.resolve_tracking_uri(OmegaConf.select(cfg, "tracking.uri"), runtime.cwd)
        client = store.client(uri)
        experiment_id = client.get_run(str(parent)).info.experiment_id
        tags = {
            MLFLOW_PARENT_RUN_ID: str(parent),
            "hydra_job_num": str(runtime.job_num),
            "job_dir": str(runtime.output_dir),
            "overrides": redact(shown_overrides(runtime.overrides)),
            "error": redact(f"{type(error).__name__}: {error}")[:5000],
        }
        run = client.create_run(
            experiment_id, tags=tags, run_name=f"job #{runtime.job_num} (refused)"
        )
        client.set_terminated(run.info.run_id, "FAILED")
    except Exception as e:  # noqa: BLE001 - the job's own error is what matters
        log.warning("could not record the refused job in MLflow: %s", redact(str(e))[:300])


def _train(cfg: DictConfig, output_dir: Path | None) -> dict[str, float]:
    conf = validate(cfg)
    runtime = hydra_runtime()
    root = runtime.cwd if runtime else Path.cwd()
    if output_dir is None:
        output_dir = runtime.output_dir if runtime else tempfile.mkdtemp(prefix="digits-")
    output_dir = Path(output_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # keep TensorFlow's C++ chatter down
    redact_logs()

    uri = store.resolve_tracking_uri(conf.tracking.uri, root)
    # An absent server, or one that refuses our credentials, is refused in seconds, not
    # after training. A sweep's job waits for it first: the sweep's run is on it, so a
    # server that is away now is restarting.
    store.check_server(uri, conf.tracking.reconnect_timeout if conf.tracking.parent_run_id else 0)
    parent = conf.tracking.parent_run_id
    if runtime and runtime.multirun and not parent:
        log.warning(
            "job %d of a multirun has no parent run (tracking.parent_run_id is not set: "
            "is the sweep callback in hydra.callbacks?); it is recorded as a top-level run",
            runtime.job_num,
        )

    # TensorFlow takes seconds to import; read (and check) the data meanwhile. Bad data
    # is refused here, before MLflow is imported and before a run is opened.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import") as pool:
        keras_ready = pool.submit(importlib.import_module, "keras")
        splits = _load_data(conf)
        keras_ready.result()
    return _tracked(cfg, conf, runtime, uri, root, output_dir, splits)


def _load_data(conf: Config):
    from digit_experiments.core import data

    return data.load(conf.data, conf.trainer.seed)


def _tracked(cfg, conf: Config, runtime: Runtime | None, uri, root, output_dir, splits) -> dict:
    from digit_experiments.core import backend, training
    from digit_experiments.reporting import plots
    from digit_experiments.tracking import lifecycle, provenance

    # trainer.threads, else what the launcher reserved for the job (Ray), else the cores
    # shared between the jobs that run at once (joblib), else TensorFlow's default.
    reserved = runtime.cpus if runtime else None
    parallel = runtime.parallel_jobs if runtime else 1
    training.limit_threads(conf.trainer.threads or reserved or training.fair_share(parallel))
    # Every call to a tracking server waits for it this long when it is away (restarted,
    # say) before the run fails; a run's epochs never wait (see tracking.runlog).
    patience = conf.tracking.reconnect_timeout
    store.connect(uri, patience if conf.tracking.parent_run_id else 0.0)
    # A sweep's job nests under the sweep's run; a run started inside the caller's own
    # active MLflow run (a notebook's) nests under that one, in its experiment.
    parent = conf.tracking.parent_run_id or lifecycle.enclosing_run_id()
    if parent:
        experiment_id = store.parent_experiment(parent, uri, patience)
    else:
        experiment_id = store.ensure_experiment(conf.tracking.experiment, uri, root, patience)
    tags = {
        "model": conf.model.name,
        "optimizer": conf.optimizer.name,
        "regularization": conf.regularization.name,
        "overrides": shown_overrides(runtime.overrides) if runtime else "",
        **provenance.tags(),  # the code's commit and library versions, to reproduce it
        # Where it ran: on a cluster, the machine and process to look at; and on what
        # (a GPU's figures are not comparable with a CPU's).
        "host": platform.node(),
        "pid": str(os.getpid()),
        "keras.backend": backend.keras_backend(),
        "device": backend.device(),
    }
    name = run_name(conf)
    if runtime and runtime.multirun:
        # The sweep's comparison matches jobs to runs by these.
        tags.update(hydra_job_num=str(runtime.job_num), job_dir=str(output_dir))
        name = f"{name} #{runtime.job_num}"
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    tags[resume.HASH_TAG] = resume.config_hash(params)
    client = store.client(uri, patience)
    # model.init_from: resolved, loaded and checked against the data before a run opens.
    source = finetune.load_source(conf, splits, client, output_dir)
    if source is not None:
        tags.update(source.tags)
    if conf.tracking.skip_finished:
        done = resume.find_finished(client, [experiment_id], tags[resume.HASH_TAG])
        if done is not None:
            return _reuse(client, done, experiment_id, name, tags, parent)
    state = _resume_state(client, conf, experiment_id, tags[resume.HASH_TAG], params, output_dir)
    try:
        with lifecycle.tracked_run(
            uri,
            experiment_id,
            name,
            tags,
            output_dir,
            parent_run_id=parent,
            curves_figure=plots.learning_curves,
            system_metrics=conf.tracking.system_metrics and conf.tracking.system_metrics_interval,
            resume_run_id=state.run_id if state else None,
            patience=patience,
        ) as record:
            log.info(
                "MLflow run %s in %s (experiment %s)", record.run_id, redact(uri), experiment_id
            )
            if state is None:
                record.params(params)
            else:
                # Its params are logged already (the same config: the hash says so).
                log.info("resuming run %s after epoch %d", state.run_id, state.epoch)
                record.tags({"resumed_after_epoch": state.epoch})
            record.text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
            for hydra_file in sorted((output_dir / ".hydra").glob("*.yaml")):
                record.text(hydra_file.read_text(), f"config/.hydra/{hydra_file.name}")
            metrics = fit_and_evaluate(conf, record, output_dir, splits, state, source)
            for job_log in output_dir.glob("*.log"):
                record.text(job_log.read_text(errors="replace"), f"logs/{job_log.name}")
    finally:
        if conf.tracking.parent_run_id and not (runtime and runtime.multirun):
            # It joined a sweep: count it there, as one more job, finished or failed.
            _refresh_sweep(uri, conf.tracking.parent_run_id)
    return metrics


def _refresh_sweep(uri: str, parent_id: str) -> None:
    from digit_experiments.app import sweep

    try:
        sweep.refresh_parent(uri, parent_id)
    except Exception as e:  # noqa: BLE001 - the run is recorded; the summary can wait
        log.warning(
            "the run joined sweep %s, whose summary could not be made again: %s",
            parent_id,
            redact(str(e))[:300],
        )


def _resume_state(client, conf: Config, experiment_id, hash_, params, output_dir):
    """The state to continue from (trainer.resume), downloaded; None: a new run."""
    if not conf.trainer.resume:
        return None
    if conf.trainer.resume == "auto":
        run = resume.find_unfinished(client, [experiment_id], hash_)
        if run is None:
            log.info("trainer.resume=auto: no interrupted run with this config; a new run")
            return None
    else:
        run = resume.check_resumable(client, conf.trainer.resume, hash_, params)
    return resume.download(client, run, output_dir / "resumed")


def _reuse(client, done, experiment_id, name, tags, parent) -> dict[str, float]:
    """tracking.skip_finished: the job's config already FINISHED as run `done`. In a
    sweep, a child run stands for it in the new sweep (tagged `reused_run_id`, with the
    earlier run's params and final metrics) so the comparison stays whole, grouped by
    params too (`digits compare --group-by`); nothing is trained."""
    from mlflow.entities import Metric, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    done_id = done.info.run_id
    log.info("skipped: this config already FINISHED as run %s (tracking.skip_finished)", done_id)
    if parent:
        tags = {**tags, "reused_run_id": done_id, MLFLOW_PARENT_RUN_ID: parent}
        run = client.create_run(experiment_id, run_name=f"{name} (reused)")
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, now, 0) for k, v in done.data.metrics.items()],
            tags=[RunTag(k, redact(str(v))) for k, v in tags.items()],
        )
        log_params(client, run.info.run_id, dict(done.data.params))
        client.set_terminated(run.info.run_id, "FINISHED")
    return dict(done.data.metrics)


def fit_and_evaluate(
    conf: Config, record, output_dir: Path, splits, state=None, source=None
) -> dict[str, float]:
    """The steps of a run, in order: seed, data, model, fit, evaluate, report. `state`:
    a resumed run's (tracking.resume.State), training continues after its epoch.
    `source`: model.init_from's network (app.finetune.Source), to fine-tune."""
    import shutil

    import numpy as np

    from digit_experiments.core import evaluate, models, pipeline, training
    from digit_experiments.reporting import describe
    from digit_experiments.tracking.callback import EpochMetrics

    training.seed_everything(conf.trainer.seed, conf.trainer.deterministic)
    training.set_precision(conf.trainer.precision)
    if state is None:
        _log_datasets(record, splits)
    log.info("data: %s from %s", splits.sizes(), splits.source)

    if source is None:
        model = models.build_model(
            conf.model, conf.regularization, splits.image_shape, splits.num_classes
        )
    else:  # fine-tuning: the source's layers, its baseline first, its learning rate
        model = source.network(conf, splits, record)
        source.before(splits, record)
        conf = source.conf(conf)
    steps_per_epoch = -(-len(splits.y_train) // conf.trainer.batch_size)
    training.compile_model(model, conf, steps_per_epoch)
    record.params(
        {
            "model.num_params": model.count_params(),
            # What trainer.jit_compile=auto became: XLA or not (Keras decides per backend).
            "model.jit_compiled": bool(model.jit_compile),
            **{f"data.n_{split}": n for split, n in splits.sizes().items()},
        }
    )
    record.text(models.summary_text(model), "reports/model_summary.txt")

    record.checkpoint = output_dir / f"{conf.model.name}_best_model.h5"
    last_state = output_dir / resume.WEIGHTS if conf.trainer.checkpoint.save_last else None
    tracking = [EpochMetrics(record, state=last_state)]
    done, best_so_far = 0, None
    if state is not None:
        # Weights and optimizer variables (its step count: schedules go on where they
        # were), the best checkpoint and the history: epochs continue from state.epoch.
        model.optimizer.build(model.trainable_variables)
        model.load_weights(state.weights)
        if state.best_checkpoint is not None:
            shutil.copyfile(state.best_checkpoint, record.checkpoint)
        record.history.update(state.history)
        record.resend_missing(state.epoch)
        done = state.epoch
        monitored = state.history.get(conf.trainer.checkpoint.monitor)
        if monitored:
            lower = search.lower_is_better(conf.trainer.checkpoint.monitor)
            best_so_far = (min if lower else max)(monitored)
    one_hot = np.eye(splits.num_classes, dtype=np.float32)
    recalibration = _recalibration_images(conf, model, splits)
    started = time.perf_counter()
    history = model.fit(
        **pipeline.fit_inputs(splits, one_hot, conf.trainer, conf.regularization.augment),
        epochs=conf.trainer.epochs,
        initial_epoch=done,
        callbacks=training.callbacks(
            conf,
            record.checkpoint,
            tracking,
            last_state=last_state,
            best_so_far=best_so_far,
            recalibration_images=recalibration,
        ),
        verbose=conf.trainer.verbose,
    )
    train_seconds = time.perf_counter() - started
    epochs_now = len(history.history.get("loss", []))  # this session's (resumed: the rest)
    epochs_run = done + epochs_now
    # Epochs a tracking server missed while it was away: sent now, waiting for it to come
    # back if it has to (tracking.reconnect_timeout), before the rest is logged.
    record.send_backlog(wait=conf.tracking.reconnect_timeout)
    record.curves()
    # Evaluate and ship the best epoch's weights (the checkpoint), whatever early
    # stopping did: the logged model, the .h5 and the test metrics then agree.
    model.load_weights(record.checkpoint)
    record.file(record.checkpoint, "checkpoints")

    shipped, probabilities, test_loss, single_view = _test(model, conf, splits, one_hot, record)
    y_pred = probabilities.argmax(axis=1)
    y_true = splits.y_test
    metrics = evaluate.classification_metrics(y_true, y_pred, splits.num_classes)
    metrics.update(single_view)
    val_accuracy = record.history.get("val_accuracy", [0.0])
    if record.history.get("val_loss"):  # what the checkpoint monitors by default
        metrics["best_val_loss"] = min(record.history["val_loss"])
    metrics.update(
        test_loss=test_loss,
        train_seconds=train_seconds,
        train_images_per_second=len(splits.y_train) * epochs_now / max(train_seconds, 1e-9),
        epochs_trained=epochs_run,
        best_epoch=checkpoint_epoch(record.history, conf.trainer.checkpoint.monitor),
        best_val_accuracy=max(val_accuracy),
    )
    if source is not None:
        metrics.update(source.after(shipped, splits, y_pred, record))
    record.metrics(metrics)
    # The run's description on its page in MLflow's UI: what it is and how it did, in one
    # line (a sweep, when it ends, adds where the run stands in it).
    outcome = {
        "model": conf.model.name,
        "optimizer": conf.optimizer.name,
        "regularization": conf.regularization.name,
        "status": "FINISHED",
        "test_accuracy": metrics["test_accuracy"],
        "test_f1_macro": metrics["test_f1_macro"],
        "epochs": epochs_run,
        "seconds": train_seconds,
    }
    record.tags({describe.NOTE_TAG: describe.run_line(outcome)})
    log.info(
        "test accuracy %.4f, macro F1 %.4f, %d epochs in %.0f s",
        metrics["test_accuracy"],
        metrics["test_f1_macro"],
        epochs_run,
        train_seconds,
    )

    log_test_reports(
        record,
        splits.x_test,
        y_true,
        probabilities,
        conf.tracking.sample_predictions,
        conf.trainer.seed,
    )
    if conf.tracking.log_model:
        from digit_experiments.inference import served

        # One model, two flavors: the Keras network, and the pyfunc that serves pictures.
        record.model(partial(served.save_model, model=shipped, examples=splits.x_test[:5]), metrics)
    return metrics


def _test(model, conf: Config, splits, one_hot, record):
    """(the model to ship, its test probabilities and loss, the bare network's metrics
    where they differ): with trainer.test_time_shift, the network wrapped in its shifted
    views (core/views.py), declared in the run's tags."""
    from digit_experiments.core import training, views

    test = partial(
        training.test_predictions,
        model,
        splits.x_test,
        one_hot[splits.y_test],
        conf.trainer.batch_size,
    )
    probabilities, test_loss = test()
    shift = conf.trainer.test_time_shift
    if not shift:
        return model, probabilities, test_loss, {}
    shipped = views.wrap(model, shift)
    record.tags({"test_time_augmentation": views.describe(shift)})
    bare = views.single_view(splits.y_test, probabilities, test_loss)
    return (shipped, *test(answering=shipped), bare)


def _recalibration_images(conf: Config, model, splits):
    """The clean training pictures trainer.recalibrate_bn asks for, or None."""
    if not conf.trainer.recalibrate_bn:
        return None
    from digit_experiments.core import batchnorm

    if not batchnorm.layers_to_recalibrate(model):
        log.warning(
            "trainer.recalibrate_bn=%d: this %s network has no trainable batch "
            "normalisation layer, nothing to recalibrate",
            conf.trainer.recalibrate_bn,
            conf.model.name,
        )
        return None
    return batchnorm.pictures(splits.x_train, conf.trainer.recalibrate_bn, conf.trainer.seed)


def checkpoint_epoch(history: dict[str, list[float]], monitor: str) -> int:
    """The epoch (from 1) the best checkpoint holds: the first best value of `monitor`
    (the lowest for a loss), as Keras' ModelCheckpoint saves only on a strict gain."""
    values = history.get(monitor) or [0.0]
    best = min(values) if search.lower_is_better(monitor) else max(values)
    return values.index(best) + 1


def log_test_reports(record, x_test, y_true, probabilities, samples: int, seed: int) -> None:
    """The test set's reports on a run: the confusion matrix (plot and CSV), sklearn's
    classification report (text and JSON) and a grid of `samples` predictions. Training
    runs and ensembles (app/ensemble.py) log the same files."""
    from digit_experiments.core import evaluate
    from digit_experiments.reporting import plots

    num_classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    cm = evaluate.confusion(y_true, y_pred, num_classes)
    record.figure(plots.confusion_matrices(cm), "plots/confusion_matrix.png")
    record.text(evaluate.confusion_csv(cm), "reports/confusion_matrix.csv")
    report_text, report_dict = evaluate.report(y_true, y_pred, num_classes)
    record.text(report_text, "reports/classification_report.txt")
    record.json(report_dict, "reports/classification_report.json")
    shown = evaluate.pick_samples(y_true, y_pred, samples, seed)
    record.figure(
        plots.sample_predictions(
            x_test[shown], y_true[shown], y_pred[shown], probabilities[shown].max(axis=1)
        ),
        "plots/sample_predictions.png",
    )


def _log_datasets(record, splits) -> None:
    """Each split as a run input (name, digest, source): the UI's dataset column."""
    for context, name, x, y in (
        ("training", f"{splits.name}-train", splits.x_train, splits.y_train),
        ("validation", f"{splits.name}-val", splits.x_val, splits.y_val),
        ("testing", f"{splits.name}-test", splits.x_test, splits.y_test),
    ):
        digest = dataset_digest(x, y)
        record.dataset(x, y, name=name, source=splits.source, digest=digest, context=context)
    finetune.log_folder_data(record, splits)  # data.source=folder: digest, counts, test split


def dataset_digest(x, y) -> str:
    """A dataset's digest, as its run input: the same images and labels, the same digest."""
    import numpy as np

    # MLflow's own digest hashes only the first few thousand values; hash all of it
    # (through the arrays' buffers: no copies of the 170 MB of training images).
    digest = hashlib.sha256(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y).data)
    return digest.hexdigest()[:16]
