"""Entry points for `mlflow run .` (see MLproject).

MLflow passes each parameter to the command as one quoted word; Hydra wants each
override as its own argument. These entry points split the string the way a shell would.

    python -m digit_experiments.project main "model=mlp trainer.epochs=2"
    python -m digit_experiments.project sweep "model=mlp,cnn"
    python -m digit_experiments.project promote "--experiment mlp-vs-cnn --dry-run"
"""

from __future__ import annotations

import shlex
import sys

ENTRY_POINTS = ("main", "sweep", "promote")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ENTRY_POINTS or len(argv) > 2:
        print(
            f"usage: python -m digit_experiments.project {{{','.join(ENTRY_POINTS)}}} "
            "['ARGUMENTS']",
            file=sys.stderr,
        )
        return 2
    entry, words = argv[0], shlex.split(argv[1] if len(argv) > 1 else "")
    if entry == "promote":
        from digit_experiments import cli

        return cli.main(["promote", *words])
    from digit_experiments.app.main import cli

    sys.argv = ["digits-train", *(["-m"] if entry == "sweep" else []), *words]
    cli()
    return 0


if __name__ == "__main__":
    sys.exit(main())
