"""`digits`: commands for what comes after training.

    digits compare                         # the latest sweep, best first
    digits compare --parent RUN_ID --metric test_f1_macro --markdown table.md
    digits compare --experiment mlp-vs-cnn --csv runs.csv

Tracking URI as for training: --tracking-uri, else $MLFLOW_TRACKING_URI, else
sqlite:///mlflow.db in the current directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except CliError as e:
        print(f"digits {args.command}: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: see above)")
    commands = parser.add_subparsers(dest="command")

    compare = commands.add_parser("compare", help="the runs of a sweep as a table")
    which = compare.add_mutually_exclusive_group()
    which.add_argument("--parent", metavar="RUN_ID", help="a sweep's parent run")
    which.add_argument("--experiment", metavar="NAME", help="every run of an experiment")
    compare.add_argument("--metric", default="test_accuracy", help="sort key (a column)")
    compare.add_argument("--ascending", action="store_true", help="smallest first")
    compare.add_argument("--markdown", type=Path, metavar="FILE", help="also write Markdown")
    compare.add_argument("--csv", type=Path, metavar="FILE", help="also write CSV")
    compare.add_argument("--columns", help="comma-separated columns to show")
    compare.set_defaults(handler=_compare)
    return parser


def _client(args):
    from mlflow.tracking import MlflowClient

    from digit_experiments import tracking

    return MlflowClient(tracking.resolve_tracking_uri(args.tracking_uri, Path.cwd()))


def _compare(args) -> int:
    from mlflow.exceptions import MlflowException

    from digit_experiments import compare

    client = _client(args)
    columns = [c for c, _ in compare.COLUMNS]
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",")]
        unknown = sorted(set(wanted) - set(columns))
        if unknown:
            raise CliError(f"--columns: unknown {unknown}; known: {', '.join(columns)}")
        columns = wanted
    if args.metric not in [c for c, _ in compare.COLUMNS]:
        raise CliError(f"--metric: unknown column {args.metric!r}")

    if args.experiment:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise CliError(f"--experiment: no experiment named {args.experiment!r}")
        runs = client.search_runs([experiment.experiment_id], max_results=10_000)
        rows = [compare.row(r) for r in runs if r.data.tags.get("sweep") != "true"]
        title = f"experiment {args.experiment!r}"
    else:
        if args.parent:
            try:
                parent = client.get_run(args.parent)
            except MlflowException as e:
                raise CliError(f"--parent: no run {args.parent!r} ({e.message})") from e
        else:
            ids = [e.experiment_id for e in client.search_experiments()]
            parent = compare.latest_sweep(client, ids) if ids else None
            if parent is None:
                raise CliError(
                    "no sweep found; run one with `python -m "
                    "digit_experiments.train -m ...` or pass --experiment"
                )
        sweep_dir = parent.data.tags.get("sweep_dir")
        rows = compare.sweep_rows(client, parent, Path(sweep_dir) if sweep_dir else None)
        title = f"sweep {parent.info.run_name!r} ({parent.info.run_id}, {parent.info.status})"
    if not rows:
        raise CliError(f"{title} has no runs")

    rows = compare.sort_rows(rows, args.metric, args.ascending)
    print(title)
    print(compare.to_text(rows, columns), end="")
    if args.markdown:
        args.markdown.write_text(compare.to_markdown(rows, columns))
    if args.csv:
        args.csv.write_text(compare.to_csv(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
