"""What every benchmark shares: where results go, the machine they ran on, running the
project in a fresh process, alternating repeats, and min / median / max of them."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from digit_experiments.core.backend import keras_backend

ROOT = Path(__file__).resolve().parent.parent
# The command line of the interpreter running the benchmark (its `digits` script, as a
# module: an environment that only has this checkout on its path has no script).
DIGITS = [sys.executable, "-m", "digit_experiments.cli"]
# $BENCHMARK_RESULTS redirects the figures (the tests use it to keep these files as they are).
RESULTS = Path(os.environ.get("BENCHMARK_RESULTS", ROOT / "benchmarks" / "results"))


def gpu() -> str | None:
    """The first NVIDIA GPU's name (nvidia-smi), or None on a machine without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def machine() -> str:
    """E.g. 'AMD EPYC (2 cores), Python 3.11.7, TensorFlow 2.21.0, Keras 3.15.0, ...', with
    the GPU first where there is one, and the backend Keras runs on (KERAS_BACKEND)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    backend = keras_backend()
    name = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}.get(backend, backend)
    card = gpu()
    return (
        (f"{card}, " if card else "")
        + f"{cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, "
        f"{name} {metadata.version(backend)}, Keras {metadata.version('keras')}, "
        f"MLflow {metadata.version('mlflow')}"
    )


def env() -> dict[str, str]:
    """The environment for a child process: this checkout importable, the embedded store."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environ = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    environ.pop("MLFLOW_TRACKING_URI", None)
    return environ


def timed(command: list[str], cwd: str | Path, **kwargs) -> tuple[float, str]:
    """Run a command to completion; (wall seconds, stdout). Exits on failure."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save(name: str, setup: str, data: dict, markdown: str) -> None:
    """Write benchmarks/results/NAME.json and NAME.md, and print the Markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"setup": setup, "machine": machine(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    text = f"{setup}\n\nMachine: {data['machine']}\n\n{markdown}\n"
    (RESULTS / f"{name}.md").write_text(text)
    print("\n" + text)


def chosen_rows(parser, only: str | None, names, flag: str = "--only") -> list[str]:
    """The rows `flag` names, in its order (all of them without it); an unknown name
    stops the script before anything runs, naming the flag."""
    chosen = only.split(",") if only else list(names)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"{flag}: no row {unknown}; the rows: {list(names)}")
    return chosen


def rounds(names: list[str], repeat: int) -> Iterator[tuple[int, str]]:
    """(round, name) for `repeat` rounds in which every name runs once. The order rotates
    from round to round, so each goes first in turn: this machine's speed drifts over
    minutes, and a fixed order would always give one of them the drift's later part."""
    for i in range(repeat):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            yield i, name


def spread(values: list[float], digits: int = 3) -> dict:
    """Every repeat and their min / median / max: what each timing records."""
    return {
        "values": [round(v, digits) for v in values],
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def show(stats: dict, fmt: str = "{:.1f}", unit: str = "") -> str:
    """'min / median / max' of a spread() (one value alone when there was one repeat)."""
    if len(stats["values"]) == 1:
        return fmt.format(stats["median"]) + unit
    return " / ".join(fmt.format(stats[k]) for k in ("min", "median", "max")) + unit


def prepare(overrides: list[str]):
    """(conf, splits, compiled model) as a run builds them, without tracking: the same
    config composition, threads, seeding, data, model, and `training.compile_model`
    (optimizer with its schedule, loss with label smoothing, metrics, XLA setting)."""
    from hydra import compose, initialize_config_dir

    from digit_experiments.app.help import CONF_DIR
    from digit_experiments.app.resolvers import register_resolvers
    from digit_experiments.core import data, models, training
    from digit_experiments.core.config import register_configs, validate

    register_configs()  # the schemas conf/ names, as the entry point registers them
    register_resolvers()  # the ${digits.*} resolvers conf/ uses
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        conf = validate(compose("config", overrides=overrides))
    training.limit_threads(conf.trainer.threads)
    training.seed_everything(conf.trainer.seed, conf.trainer.deterministic)
    splits = data.load(conf.data, conf.trainer.seed)
    model = models.build_model(
        conf.model, conf.regularization, splits.image_shape, splits.num_classes
    )
    steps_per_epoch = -(-len(splits.y_train) // conf.trainer.batch_size)
    training.compile_model(model, conf, steps_per_epoch)
    return conf, splits, model


def epoch_clock(seconds: list[float]):
    """A Keras callback that appends each epoch's seconds (validation included) to
    `seconds`."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    return Clock()


def last_json_line(stdout: str) -> dict:
    """What a worker process printed last, as JSON (TensorFlow may print before it)."""
    return json.loads(stdout.strip().splitlines()[-1])


def store_runs(directory: str | Path) -> list:
    """Every run (of every experiment) in the SQLite store `directory`/mlflow.db, which a
    process started in `directory` writes by default."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{directory}/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def variant_rows(labels: dict[str, str], seconds: dict, finished: dict) -> list[dict]:
    """A row per variant: its wall seconds and its speed-up over the first variant,
    taken per round (rounds run minutes apart, and this machine's speed drifts)."""
    first = next(iter(labels))
    return [
        {
            "variant": label,
            "name": name,
            "wall_seconds": spread(seconds[name], 1),
            "speedup": spread([b / s for b, s in zip(seconds[first], seconds[name])], 2),
            "finished_jobs": finished[name],
        }
        for name, label in labels.items()
    ]
