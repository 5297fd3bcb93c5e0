"""What every benchmark shares: where results go, the machine they ran on, and running
the project in a fresh process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# $BENCHMARK_RESULTS redirects the figures (the tests use it to keep these files as they are).
RESULTS = Path(os.environ.get("BENCHMARK_RESULTS", ROOT / "benchmarks" / "results"))


def machine() -> str:
    """E.g. 'Intel Xeon ... (2 cores), Python 3.11.7, TensorFlow 2.21.0'."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, "
        f"TensorFlow {metadata.version('tensorflow')}, MLflow {metadata.version('mlflow')}"
    )


def env() -> dict[str, str]:
    """The environment for a child process: this checkout importable, the embedded store."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
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


def prepare(overrides: list[str]):
    """(conf, splits, compiled model) as a run builds them, without tracking: the same
    config composition, data, model, optimizer, loss and XLA setting."""
    import keras
    from hydra import compose, initialize_config_dir

    from digit_experiments import data, models
    from digit_experiments.config import validate
    from digit_experiments.train import CONF_DIR, _limit_threads

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        conf = validate(compose("config", overrides=overrides))
    _limit_threads(conf.trainer.threads)
    keras.utils.set_random_seed(conf.trainer.seed)
    splits = data.load(conf.data, conf.trainer.seed)
    model = models.build_model(conf.model, conf.regularization)
    model.compile(
        optimizer=models.build_optimizer(conf.optimizer),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=conf.trainer.label_smoothing),
        metrics=["accuracy"],
        jit_compile=conf.trainer.jit_compile,
    )
    return conf, splits, model
