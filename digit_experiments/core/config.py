"""Config schemas: one dataclass per config group, registered in Hydra's ConfigStore.

Hydra checks keys and types against these schemas when it composes the config, so a
mistyped key (`trainer.epochz=3`) or a wrong type (`trainer.epochs=ten`) never reaches a
job. Ranges and choices are declared beside each field (`spec(..., ge=1)`, see
schema.py) and checked by `validate()`, which a job calls first: before TensorFlow or
MLflow is imported.

Each model option's schema lives beside its builder (digit_experiments/core/models/);
`register_configs` finds them there.

This module must stay light: it is imported by `--help` and `--cfg job`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from digit_experiments.core import models
from digit_experiments.core.schema import check, spec
from digit_experiments.errors import ConfigError

MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")


# --- data -----------------------------------------------------------------------------


@dataclass
class DataConfig:
    # bundled: the MNIST IDX files shipped in the package (offline, checksummed);
    # keras: keras.datasets.mnist (downloads once into ~/.keras); path: `path` below;
    # folder: a folder of pictures, train/<digit>/*, test/<digit>/* (core/folder.py).
    source: str = spec("bundled", choices=("bundled", "keras", "path", "folder"))
    # source=path: a directory holding the four IDX files (.gz or not), or an .npz with
    # x_train, y_train, x_test, y_test. source=folder: the folder of pictures.
    path: str | None = None
    # source=folder: accept a split without a folder (or pictures) for some digit.
    allow_missing_classes: bool = False
    # Labelled training images per class (before the validation split), seeded; null =
    # all. The few-shot sweeps: data.per_class=5,20,100,null.
    per_class: int | None = spec(None, ge=1)
    # Refuse files whose uncompressed content differs from the published MNIST.
    # Turn off to train on other data in MNIST's format.
    verify_checksums: bool = True
    # Share of the training images held out for validation (early stopping, checkpoint).
    val_fraction: float = spec(0.1, gt=0.0, lt=1.0)
    # Class-balanced, deterministic slices; null = all. Tests and smoke runs use them.
    train_limit: int | None = spec(None, ge=10)
    test_limit: int | None = spec(None, ge=10)


# --- optimizer ------------------------------------------------------------------------


@dataclass
class AdamConfig:
    name: str = spec("adam", choices=("adam",))  # fixed: it picks the builder
    learning_rate: float = spec(1e-3, gt=0.0)
    beta_1: float = spec(0.9, ge=0.0, lt=1.0)
    beta_2: float = spec(0.999, ge=0.0, lt=1.0)
    epsilon: float = spec(1e-7, gt=0.0)
    amsgrad: bool = False
    clipnorm: float | None = spec(None, gt=0.0)


@dataclass
class AdamWConfig:
    name: str = spec("adamw", choices=("adamw",))  # fixed: it picks the builder
    learning_rate: float = spec(1e-3, gt=0.0)
    weight_decay: float = spec(1e-4, ge=0.0)
    beta_1: float = spec(0.9, ge=0.0, lt=1.0)
    beta_2: float = spec(0.999, ge=0.0, lt=1.0)
    epsilon: float = spec(1e-7, gt=0.0)
    clipnorm: float | None = spec(None, gt=0.0)


@dataclass
class SGDConfig:
    name: str = spec("sgd", choices=("sgd",))  # fixed: it picks the builder
    learning_rate: float = spec(0.01, gt=0.0)
    momentum: float = spec(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    clipnorm: float | None = spec(None, gt=0.0)


@dataclass
class RMSpropConfig:
    name: str = spec("rmsprop", choices=("rmsprop",))  # fixed: it picks the builder
    learning_rate: float = spec(1e-3, gt=0.0)
    rho: float = spec(0.9, gt=0.0, lt=1.0)
    momentum: float = spec(0.0, ge=0.0, lt=1.0)
    epsilon: float = spec(1e-7, gt=0.0)
    centered: bool = False
    clipnorm: float | None = spec(None, gt=0.0)


# --- regularization -------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Random geometric changes to training images (Keras preprocessing layers inside
    the model: active in training only, identity at inference and in the saved model)."""

    enabled: bool = False
    rotation: float = spec(10.0, ge=0.0, le=180.0)  # degrees, either way
    shift: float = spec(0.1, ge=0.0, lt=1.0)  # fraction of the image, each axis
    zoom: float = spec(0.1, ge=0.0, lt=1.0)  # fraction, in or out
    # Elastic distortions (Simard et al. 2003), the classic augmentation for MLPs:
    # uniform noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of
    # `elastic_sigma` pixels, times `elastic` (their alpha and sigma, 34 and 4, move a
    # pixel by about 1.3 on average, 6 at most; 0 = off). Made in the tf.data pipeline
    # (trainer.pipeline=dataset), outside the model: saved models need only Keras.
    elastic: float = spec(0.0, ge=0.0)
    elastic_sigma: float = spec(4.0, gt=0.0)
    # Rotation, shift and zoom as one affine transform of each training batch in the
    # tf.data pipeline (trainer.pipeline=dataset) instead of three Keras layers in the
    # model: each picture is resampled once. Every bilinear resampling blurs: of a
    # picture's edge energy (squared steps between neighbouring pixels), 43% is left
    # after the three layers and 66% after one transform (2,000 training pictures), and
    # the test set's pictures are sharp (core/distort.py).
    single_transform: bool = False

    @property
    def distorts(self) -> bool:
        """Whether training batches get elastic distortions."""
        return self.enabled and self.elastic > 0

    @property
    def in_pipeline(self) -> bool:
        """Whether rotation, shift and zoom are made in tf.data (not by the model)."""
        return self.enabled and self.single_transform


@dataclass
class RegularizationConfig:
    name: str = "none"
    # Dropout after each conv block (CNNs) and after each hidden dense layer (all models).
    conv_dropout: float = spec(0.0, ge=0.0, lt=1.0)
    dense_dropout: float = spec(0.0, ge=0.0, lt=1.0)
    # L2 penalty on every Conv2D/Dense kernel (biases are left alone, as usual).
    l2: float = spec(0.0, ge=0.0)
    # Batch normalisation between each Conv2D/Dense layer and its activation.
    batchnorm: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# --- trainer --------------------------------------------------------------------------


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    monitor: str = spec("val_accuracy", choices=MONITORS)
    patience: int = spec(4, ge=0)  # epochs without improvement before stopping
    min_delta: float = spec(0.0, ge=0.0)
    restore_best_weights: bool = True


@dataclass
class CheckpointConfig:
    # The best model so far is written as <model>_best_model.h5 in the run's output dir.
    monitor: str = spec("val_accuracy", choices=MONITORS)
    # After every epoch, the state (weights, optimizer variables, history) goes to the
    # run's artifacts, so that an interrupted run can be resumed (trainer.resume).
    save_last: bool = True


@dataclass
class ScheduleConfig:
    """How the learning rate moves during training (from optimizer.learning_rate).

    constant; cosine: warm-up then cosine decay to min_fraction of the peak; onecycle:
    linear ramp up for warmup_epochs then cosine down (Smith's one-cycle); plateau: halve
    (factor) when val_loss has not improved for `patience` epochs."""

    name: str = spec("plateau", choices=("constant", "cosine", "onecycle", "plateau"))
    warmup_epochs: float = spec(0.0, ge=0.0)
    min_fraction: float = spec(0.01, ge=0.0, le=1.0)
    factor: float = spec(0.5, gt=0.0, lt=1.0)
    patience: int = spec(2, ge=0)


@dataclass
class TrainerConfig:
    epochs: int = spec(15, ge=1)
    batch_size: int = spec(32, ge=1)
    seed: int = spec(42, ge=0)
    verbose: int = spec(2, choices=(0, 1, 2))  # Keras fit verbosity: 2 = one line per epoch
    # TensorFlow intra-op threads; null: all cores, or an even share of them when a
    # launcher runs jobs in parallel (hydra/launcher=joblib hydra.launcher.n_jobs=2).
    threads: int | None = spec(None, ge=1)
    # Soft targets: the true class gets 1 - s + s/10, the others s/10 (0 = plain labels).
    label_smoothing: float = spec(0.0, ge=0.0, lt=1.0)
    # How batches reach the model: `arrays` (NumPy arrays straight to fit) or `dataset`
    # (tf.data: cached, shuffled each epoch, prefetched). benchmarks/throughput.py
    # compares them, and XLA compilation: tf.data measures faster for the MLP and the
    # seed CNN, hence the default.
    pipeline: str = spec("dataset", choices=("arrays", "dataset"))
    # XLA. `auto`: Keras decides, off for TensorFlow on a CPU-only machine (slower here,
    # see benchmarks/README.md), on for TensorFlow on a GPU and on JAX, which without it
    # runs every step op by op (two orders of magnitude slower); unless a layer of the
    # model says it cannot compile. `model.jit_compiled` records what it became.
    jit_compile: Any = spec("auto", choices=("auto", True, False))
    # Training steps per call into TensorFlow: > 1 saves Python's per-step work (Keras
    # then runs batch callbacks once per call; epochs, validation and logging are unchanged).
    steps_per_execution: int = spec(1, ge=1)
    # float32, or mixed_float16 / mixed_bfloat16: layers compute in 16 bits and keep
    # float32 weights (faster on GPUs with tensor cores; slower on most CPUs). The
    # softmax output stays float32.
    precision: str = spec("float32", choices=("float32", "mixed_float16", "mixed_bfloat16"))
    # Exponential moving average of the weights (Polyak averaging), e.g. 0.999: the
    # averaged weights are what validation sees, what is checkpointed and shipped. 0: off.
    ema: float = spec(0.0, ge=0.0, lt=1.0)
    # Before each validation, recompute batch normalisation's statistics for the weights
    # being validated (with ema, the averaged ones) on this many clean training pictures:
    # no augmentation, no dropout (core/batchnorm.py). 0: keep the moving averages that
    # training gathered.
    recalibrate_bn: int = spec(0, ge=0)
    # Test-time augmentation, declared as such: the shipped model (and so test_accuracy)
    # averages the network's answers on the picture and on it shifted this many pixels
    # up, down, left and right (core/views.py); `single_view_test_accuracy` is the bare
    # network's. 0: off. At most 4: an MNIST digit fills the 20x20 centre of its frame.
    test_time_shift: int = spec(0, ge=0, le=4)
    # Deterministic TensorFlow ops: same config and seed, same metrics, bit for bit
    # (some ops get slower; without it, thread scheduling can change the last digits).
    deterministic: bool = False
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Continue an interrupted run, in the same MLflow run, from its last epoch: a run id,
    # or `auto`: the latest FAILED/KILLED run with this same config, if any (for sweeps
    # launched again; a job with nothing to resume starts a new run).
    resume: str | None = None


# --- fine-tuning ----------------------------------------------------------------------


FREEZE_CHOICES = ("none", "features")


@dataclass
class FinetuneConfig:
    """How a network given by model.init_from is trained further (ignored without it)."""

    # none: train every layer; features: everything but the dense head (the layers
    # after the last conv/flatten layer); N: the network's first N layers (0 = none).
    freeze: str = "none"
    # The learning rate when fine-tuning (null: optimizer.learning_rate).
    learning_rate: float | None = spec(None, gt=0.0)

    def __post_init__(self) -> None:
        text = str(self.freeze).strip()
        if text not in FREEZE_CHOICES and not text.isdigit():
            raise ConfigError(
                f"invalid config:\n  finetune.freeze must be none, features or a number of "
                f"layers (0 or more), got {self.freeze!r}"
            )
        self.freeze = text


# --- tracking -------------------------------------------------------------------------


@dataclass
class TrackingConfig:
    # null: $MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db in the directory the run
    # was started from (the project root), with artifacts in ./mlruns beside it.
    uri: str | None = None
    experiment: str = "digit-experiments"
    run_name: str | None = None  # null: <model>-<optimizer>-<regularization>
    log_model: bool = True  # log the trained model as an MLflow model (for the registry)
    sample_predictions: int = spec(25, ge=1, le=100)  # images in the predictions grid
    # The run this one is a child of. A sweep sets it for each of its jobs (the sweep's
    # parent run); a job whose store does not have that run is refused, not orphaned.
    parent_run_id: str | None = None
    # A tracking server that went away mid-run: how long a call of the run (not an
    # epoch's: training goes on) and the end of the run, to send the epochs it missed,
    # wait for it to come back before giving up (seconds).
    reconnect_timeout: float = spec(60.0, ge=0.0)
    # CPU, memory, disk, network (and GPU when there is one) as system/* metrics, with
    # MLflow's system-metrics monitor: one sample every system_metrics_interval seconds.
    system_metrics: bool = True
    system_metrics_interval: float = spec(10.0, gt=0.0)
    # A job whose config already FINISHED in this experiment is not trained again: its
    # earlier run stands for it (a sweep launched again after some jobs failed).
    skip_finished: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    # model and optimizer have one schema per option (see SCHEMAS), applied by the
    # option's own YAML file through its defaults list.
    model: Any = MISSING
    optimizer: Any = MISSING
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# Schemas live in their own `schema/` group so they do not show up as options in --help;
# each option file names its schema first in its defaults list, e.g. conf/model/cnn.yaml:
#   defaults: [/schema/model/cnn@_here_, _self_]
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"mnist": DataConfig},
    # "model": one per module of digit_experiments/core/models/ (see register_configs)
    "optimizer": {
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "sgd": SGDConfig,
        "rmsprop": RMSpropConfig,
    },
    "regularization": {"base": RegularizationConfig},
    "trainer": {"base": TrainerConfig},
    "tracking": {"base": TrackingConfig},
    "finetune": {"base": FinetuneConfig},
}


def register_configs() -> None:
    """Put every schema into Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in {**SCHEMAS, "model": models.specs()}.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def validate(cfg: DictConfig) -> Config:
    """Check every range and choice; return the config as typed dataclasses.

    Raises ConfigError naming the dotted key, the value and what is allowed, e.g.
    `trainer.epochs must be >= 1, got 0`.
    """
    conf = check(cfg)
    augment = conf.regularization.augment
    if augment.distorts and conf.trainer.pipeline != "dataset":
        raise ConfigError(
            f"invalid config:\n  regularization.augment.elastic={augment.elastic} needs "
            f"trainer.pipeline=dataset (the distortions are made in tf.data), got "
            f"trainer.pipeline={conf.trainer.pipeline}"
        )
    if augment.in_pipeline and conf.trainer.pipeline != "dataset":
        raise ConfigError(
            "invalid config:\n  regularization.augment.single_transform=true needs "
            "trainer.pipeline=dataset (the transform is made in tf.data), got "
            f"trainer.pipeline={conf.trainer.pipeline}"
        )
    _check_backend(conf)
    return conf


def _installed(package: str) -> bool:
    """Whether `package` can be imported, without importing it (TensorFlow takes seconds)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a finder refused it; or a stand-in in sys.modules
        return False


def _check_backend(conf: Config) -> None:
    """The two TensorFlow-only options, refused where Keras runs on another backend (or,
    for tf.data, where TensorFlow is not installed at all: Keras on JAX takes it too)."""
    from digit_experiments.core.backend import keras_backend

    backend = keras_backend()
    if conf.trainer.deterministic and backend != "tensorflow":
        raise ConfigError(
            f"invalid config:\n  trainer.deterministic=true is TensorFlow's op determinism, "
            f"and Keras runs on {backend} here (KERAS_BACKEND): drop it, or run on tensorflow"
        )
    if conf.trainer.pipeline == "dataset" and not _installed("tensorflow"):
        # The single transform is made in tf.data too: say so now, not at the next try.
        also = (
            " with regularization.augment.single_transform=false (the model's own "
            "augmentation layers)"
            if conf.regularization.augment.in_pipeline
            else ""
        )
        raise ConfigError(
            "invalid config:\n  trainer.pipeline=dataset builds a tf.data pipeline, and "
            f"TensorFlow is not installed: use trainer.pipeline=arrays{also}"
        )
