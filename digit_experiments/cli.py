"""`digits`: commands for what comes after training.

    digits compare                         # the latest sweep, best first
    digits compare --parent RUN_ID --metric test_f1_macro --markdown table.md
    digits compare --group-by              # a sweep over seeds: mean ± std per config
    digits promote                         # best run of the latest sweep -> registry
    digits promote --experiment mlp-vs-cnn --filter "tags.model = 'cnn'" --dry-run
    digits ensemble --parent RUN_ID --top 3  # average the 3 best models into one, as a run
    digits predict --model models:/mnist-digit-classifier@champion digit.png more/*.png
    digits export --model models:/mnist-digit-classifier@champion --out cnn_best_model.h5
    digits stack up --dir .stack           # PostgreSQL + mlflow server + Ray head, local
    digits app                             # draw a digit: champion vs challenger, in a browser

Tracking URI as for training: --tracking-uri, else $MLFLOW_TRACKING_URI, else
sqlite:///mlflow.db in the current directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from digit_experiments.errors import DigitsError
from digit_experiments.tracking.redaction import redact


class CliError(DigitsError):
    """A mistake in the command line itself."""


def main(argv: list[str] | None = None) -> int:
    return _run(argv)[0]


def _run(argv: list[str] | None) -> tuple[int, bool]:
    """(exit status, whether the process may end without Python's teardown)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    # Loading a model from the store would draw MLflow's download bar around the answer.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2, False
    try:
        code = args.handler(args)
    except DigitsError as e:
        print(f"digits {args.command}: {redact(str(e))}", file=sys.stderr)
        code = 1
    return code, args.exit_now


def console() -> None:
    """Console entry point (`digits`): what it prints is masked like a run's output."""
    from digit_experiments.tracking.redaction import redact_console

    redact_console()
    code, exit_now = _run(None)
    if exit_now:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End a read-only command without Python's interpreter teardown: freeing the modules
    of TensorFlow (and MLflow) one by one takes longer than a prediction (~0.9 s with
    TensorFlow alone, ~1.4 s with MLflow too, on 2 cores). Exit handlers still run (they
    flush logging, remove temporary folders) and the output is flushed; only the freeing
    of memory the system reclaims anyway is skipped."""
    import atexit
    import contextlib

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`| head`)
            stream.flush()
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: see above)")
    # A command that writes nothing ends without Python's teardown (see _exit_now).
    parser.set_defaults(exit_now=False)
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
    compare.add_argument(
        "--group-by",
        nargs="?",
        const="",
        metavar="KEYS",
        help="a row per configuration: its runs, and each metric's mean ± sample std "
        "(n - 1), min and max. Without KEYS: by every param but trainer.seed and those that "
        "do not change what is trained (tracking.*, trainer.threads, ...); else by the "
        "comma-separated param keys, e.g. model.name,optimizer.name",
    )
    compare.set_defaults(handler=_compare)

    promote = commands.add_parser(
        "promote", help="register the best run's model; move alias champion if it wins"
    )
    scope = promote.add_mutually_exclusive_group()
    scope.add_argument("--parent", metavar="RUN_ID", help="a sweep's parent run")
    scope.add_argument("--experiment", metavar="NAME", help="every run of an experiment")
    promote.add_argument(
        "--filter", metavar="SEARCH", help="MLflow search filter, e.g. \"tags.model = 'cnn'\""
    )
    promote.add_argument("--metric", default="test_accuracy", help="what 'best' means")
    promote.add_argument("--name", default="mnist-digit-classifier", help="registered model")
    promote.add_argument(
        "--force",
        action="store_true",
        help="make it champion even if it does not beat the champion",
    )
    promote.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    promote.set_defaults(handler=_promote)

    ensemble = commands.add_parser(
        "ensemble",
        help="average the best runs' models into one model, logged as a run of its own",
        description="Average the softmax probabilities of the K best runs' models (by "
        "--metric) into one model; log it as a run, evaluated on MNIST's test set, with "
        "its members as lineage. `digits promote` then treats it like any run.",
    )
    members = ensemble.add_mutually_exclusive_group()
    members.add_argument(
        "--parent", metavar="RUN_ID", help="a sweep's parent run (default: the latest)"
    )
    members.add_argument("--experiment", metavar="NAME", help="every run of an experiment")
    members.add_argument("--runs", metavar="ID,ID,...", help="exactly these runs (no --top)")
    ensemble.add_argument("--top", type=int, metavar="K", help="how many runs (default 3)")
    ensemble.add_argument("--metric", default="test_accuracy", help="what 'best' means")
    ensemble.add_argument("--name", help="the ensemble run's name (default ensemble-cnn-mlp-...)")
    ensemble.add_argument(
        "--experiment-name", metavar="NAME", help="log it here (default: the members' experiment)"
    )
    ensemble.add_argument(
        "--test-time-shift",
        type=int,
        metavar="N",
        help="test-time augmentation: also answer each picture shifted N pixels up, down, "
        "left and right, and average; 0: off (default: the views the members ship, when "
        "they all ship the same, else 0)",
    )
    ensemble.set_defaults(handler=_ensemble)

    predict = commands.add_parser("predict", help="digits in images (PNG/JPEG) or .npy arrays")
    predict.add_argument(
        "--model",
        required=True,
        metavar="URI",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or .h5/.keras",
    )
    predict.add_argument("files", nargs="+", type=Path, metavar="FILE")
    predict.add_argument("--json", action="store_true", help="JSON with all ten probabilities")
    predict.set_defaults(handler=_predict, exit_now=True)

    export = commands.add_parser("export", help="write a model as .h5 for plain Keras")
    export.add_argument("--model", required=True, metavar="URI")
    export.add_argument("--out", required=True, type=Path, metavar="FILE")
    export.set_defaults(handler=_export)

    stack = commands.add_parser(
        "stack",
        help="a local team stack on 127.0.0.1: PostgreSQL, mlflow server, Ray head",
        description="A local team stack on 127.0.0.1: PostgreSQL, an mlflow server "
        "(artifacts proxied into DIR/artifacts) and a Ray head. Everything stays in DIR.",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir", type=Path, default=Path(".stack"), help="the stack's folder (default .stack)"
    )
    actions = stack.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", parents=[where], help="start what is not running")
    up.add_argument("--no-ray", action="store_true", help="PostgreSQL and mlflow only")
    up.add_argument("--num-cpus", type=int, metavar="N", help="Ray's CPUs (default: all)")
    actions.add_parser("down", parents=[where], help="stop it all; the data stays")
    status_help = (
        "each component: up/down, port, pid, data folder; "
        "exit status 0 if all are up, 3 if any is down"
    )
    actions.add_parser("status", parents=[where], help=status_help, description=status_help)
    actions.add_parser(
        "env", parents=[where], help='shell exports for clients: eval "$(digits stack env)"'
    )
    stack.set_defaults(handler=_stack)

    app = commands.add_parser(
        "app",
        help="the draw-a-digit web app (Streamlit) on 127.0.0.1",
        description="Draw or upload a digit and see what the registry's champion and "
        "challenger (or the --model URIs) read, side by side.",
    )
    app.add_argument("--port", type=int, default=8501, help="default 8501")
    app.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1 only)"
    )
    app.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="URI",
        help="a model to show (repeat for several; default: champion and challenger)",
    )
    app.add_argument("--name", default="mnist-digit-classifier", help="registered model")
    app.add_argument(
        "--ui-url",
        metavar="URL",
        help="the MLflow UI the registry panel links to (default: the tracking server "
        "itself, or `make ui`'s http://127.0.0.1:5000 for the embedded store)",
    )
    app.set_defaults(handler=_app)
    return parser


def _client(args):
    """The store's client; models:/ and runs:/ URIs resolve against the same store."""
    from digit_experiments.tracking import store

    uri = store.resolve_tracking_uri(args.tracking_uri, Path.cwd())
    store.connect(uri)
    return store.client(uri)


def _store_uri(args) -> str:
    """The store that models:/ and runs:/ URIs resolve against; an SQLite file that is not
    there is refused (before MLflow is imported), not created."""
    from digit_experiments.tracking import store

    uri = store.resolve_tracking_uri(args.tracking_uri, Path.cwd())
    store.check_exists(uri)
    return uri


def _compare(args) -> int:
    from mlflow.exceptions import MlflowException

    from digit_experiments.reporting import compare
    from digit_experiments.tracking import search

    client = _client(args)
    columns = None  # unless named: compare.default_columns of the rows found
    if args.columns:
        known = [c for c, _ in compare.COLUMNS]
        columns = [c.strip() for c in args.columns.split(",")]
        unknown = sorted(set(columns) - set(known))
        if unknown:
            raise CliError(f"--columns: unknown {unknown}; known: {', '.join(known)}")
    if args.metric not in [c for c, _ in compare.COLUMNS]:
        raise CliError(f"--metric: unknown column {args.metric!r}")

    if args.experiment:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise CliError(f"--experiment: no experiment named {args.experiment!r}")
        runs = search.all_runs(client, [experiment.experiment_id])
        rows = [compare.row(r) for r in runs if not search.is_sweep(r)]
        title = f"experiment {args.experiment!r}"
    else:
        if args.parent:
            try:
                parent = client.get_run(args.parent)
            except MlflowException as e:
                raise CliError(f"--parent: no run {args.parent!r} ({e.message})") from e
        else:
            parent = search.latest_sweep(client)
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
    columns = columns or compare.default_columns(rows)

    if args.group_by is not None:
        from digit_experiments.reporting import groups

        metrics = [c for c in columns if c in groups.METRICS]
        if not metrics:
            known = ", ".join(groups.METRICS)
            raise CliError(f"--columns: with --group-by, name metrics; known: {known}")
        try:
            keys = groups.resolve_keys(groups.parse_keys(args.group_by), rows)
        except ValueError as e:
            raise CliError(f"--group-by: {e}") from e
        table = groups.sort_groups(groups.by_config(rows, keys), args.metric, args.ascending)
        return _show_table(args, title, groups, table, keys, metrics)

    rows = compare.sort_rows(rows, args.metric, args.ascending)
    return _show_table(args, title, compare, rows, columns)


def _show_table(args, title: str, formats, *table) -> int:
    """Print a table with its title; write it to --markdown / --csv if asked. `formats`:
    the module whose to_text, to_markdown and to_csv render `table`."""
    print(title)
    print(formats.to_text(*table), end="")
    if args.markdown:
        args.markdown.write_text(formats.to_markdown(*table))
    if args.csv:
        args.csv.write_text(formats.to_csv(*table))
    return 0


def _promote(args) -> int:
    from digit_experiments.inference import registry

    client = _client(args)
    runs = registry.candidate_runs(client, args.parent, args.experiment, args.filter)
    plan = registry.plan_promotion(client, runs, args.name, args.metric, args.force)
    print(registry.describe(plan))
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    version = registry.apply(client, plan)
    if plan.action != "none":
        print(f"{args.name} version {version} is now {plan.action!r}")
    # Under `mlflow run . -e promote`, record the decision on the project's run.
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if project_run:
        for key, value in {
            "promoted_run_id": plan.run.info.run_id,
            "alias": plan.action,
            "model_version": version or "",
            "reason": plan.reason,
        }.items():
            client.set_tag(project_run, key, value)
    return 0


def _ensemble(args) -> int:
    from digit_experiments.app import ensemble
    from digit_experiments.tracking import store

    runs = None
    if args.runs is not None:
        if args.top is not None:
            raise CliError(f"--top {args.top}: not with --runs (the runs named are the members)")
        runs = [run_id.strip() for run_id in args.runs.split(",") if run_id.strip()]
    result = ensemble.make(
        store.resolve_tracking_uri(args.tracking_uri, Path.cwd()),
        parent=args.parent,
        experiment=args.experiment,
        runs=runs,
        top=ensemble.DEFAULT_TOP if args.top is None else args.top,
        metric=args.metric,
        name=args.name,
        experiment_name=args.experiment_name,
        test_time_shift=args.test_time_shift,
    )
    print(ensemble.summary(result))
    return 0


def _predict(args) -> int:
    import json

    from digit_experiments.inference.loading import is_store_uri, load_model
    from digit_experiments.inference.predictor import Predictor, read_pictures

    pictures = read_pictures(args.files)  # a missing or unreadable file: before the model
    if is_store_uri(args.model):
        from digit_experiments.inference import fetch

        # MLflow in a second process while TensorFlow is imported here
        model = fetch.load_model(args.model, _store_uri(args))
    else:
        model = load_model(args.model)  # a model file never imports MLflow
    answers = Predictor(model, args.model).predict_files(pictures)
    results = [
        {
            "file": label,
            "digit": p.digit,
            "probability": p.probability,
            "probabilities": [round(float(v), 6) for v in p.probabilities],
        }
        for label, p in answers
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        width = max(len(r["file"]) for r in results)
        for r in results:
            print(f"{r['file']:{width}}  {r['digit']}  {r['probability']:.4f}")
    return 0


def _export(args) -> int:
    from digit_experiments.inference.loading import export, is_store_uri, load_model
    from digit_experiments.tracking import store

    if is_store_uri(args.model):
        store.connect(_store_uri(args))
    out = export(load_model(args.model), args.out)
    print(f"wrote {out}")
    return 0


def _stack(args) -> int:
    import shlex

    from digit_experiments.stack import Stack

    stack = Stack(args.dir, echo=print)
    if args.action == "up":
        if args.num_cpus is not None and args.num_cpus < 1:
            raise CliError(f"--num-cpus must be >= 1, got {args.num_cpus}")
        stack.up(ray=not args.no_ray, num_cpus=args.num_cpus)
    elif args.action == "down":
        stack.down()
    elif args.action == "env":
        for name, value in stack.env().items():
            print(f"export {name}={shlex.quote(value)}")
    else:
        components = stack.status()
        if not stack.started:
            print(f"no stack in {stack.folder} yet: digits stack up --dir {args.dir}")
        for component in components:
            print(component.line())
        return 0 if all(c.up for c in components) else 3
    return 0


def _app(args) -> int:
    from digit_experiments.tracking import store
    from digit_experiments.web import launch

    if not 0 < args.port < 65536:
        raise CliError(f"--port must be 1-65535, got {args.port}")
    uri = store.resolve_tracking_uri(args.tracking_uri, Path.cwd())
    command = launch.command(uri, args.host, args.port, args.model, args.name, args.ui_url)
    sys.stdout.flush()
    # Streamlit becomes this process: Ctrl-C and `kill` reach it directly.
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    console()
