"""The quick benchmarks run end to end on tiny settings and write their figures (the
real figures come from full runs: see benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from digit_experiments.app.help import CONF_DIR

from .conftest import clean_env

BENCHMARKS = CONF_DIR.parent / "benchmarks"


@pytest.mark.parametrize(
    ("script", "args", "check"),
    [
        ("startup.py", ["--repeat", "1"], lambda r: r["rows"]["--help"]["heavy_imports"] == []),
        (
            "throughput.py",
            ["--images", "1000", "--epochs", "2", "--repeat", "1"]
            + ["--only", "mlp;mlp, NumPy arrays"],
            lambda r: (
                [row["variant"] for row in r["rows"]] == ["mlp", "mlp, NumPy arrays"]
                and all(row["images_per_second"] > 0 for row in r["rows"])
            ),
        ),
        (
            "time_to_99.py",
            [
                "--target",
                "0.5",
                "--max-epochs",
                "3",
                "data.train_limit=2000",
                "data.test_limit=500",
            ],
            lambda r: r["reached"]["test_accuracy"] >= 0.5,
        ),
    ],
)
def test_benchmark_runs_and_writes_its_figures(tmp_path, script, args, check):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        env={**clean_env(), "BENCHMARK_RESULTS": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name = script.removesuffix(".py")
    figures = json.loads((tmp_path / f"{name}.json").read_text())
    assert check(figures), figures
    assert "Machine:" in (tmp_path / f"{name}.md").read_text()
