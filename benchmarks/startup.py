"""Start-up: how long `python -m digit_experiments.train --help` and `--cfg job` take as
whole processes, and whether they import TensorFlow or MLflow (they must not).

    .venv/bin/python benchmarks/startup.py [--repeat 7]

After one warm-up process each (file caches warm), the two commands take turns for
`--repeat` rounds; every repeat is recorded, and the table shows min / median / max.
Writes benchmarks/results/startup.{json,md}. Target: under 1 s each.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from common import ROOT, env, rounds, save, show, spread, table, timed

COMMANDS = {"--help": ["--help"], "--cfg job": ["--cfg", "job"]}
HEAVY = ("tensorflow", "mlflow", "keras")


def command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "digit_experiments.train", *argv]


def heavy_imports(argv: list[str]) -> list[str]:
    """The heavy top-level packages the command imports (python -X importtime)."""
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", *command(argv)[1:]],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in traced.stderr.splitlines()
        if "|" in line
    }
    return sorted(imported & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for argv in COMMANDS.values():
        timed(command(argv), cwd=ROOT)  # warm-up: file caches
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _, name in rounds(list(COMMANDS), args.repeat):
        seconds[name].append(timed(command(COMMANDS[name]), cwd=ROOT)[0])
    rows = {
        name: {"seconds": spread(seconds[name]), "heavy_imports": heavy_imports(argv)}
        for name, argv in COMMANDS.items()
    }
    markdown = table(
        ["command", "seconds (min / median / max)", "TensorFlow/MLflow imported"],
        [
            [
                f"`python -m digit_experiments.train {name}`",
                show(r["seconds"], "{:.2f}"),
                ", ".join(r["heavy_imports"]) or "no",
            ]
            for name, r in rows.items()
        ],
    )
    setup = (
        f"`benchmarks/startup.py --repeat {args.repeat}`: whole processes, after one "
        f"warm-up run each (file caches warm), the two commands alternated over "
        f"{args.repeat} rounds. Target: under 1 s."
    )
    save("startup", setup, {"repeat": args.repeat, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
