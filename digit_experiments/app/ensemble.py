"""`digits ensemble`: the K best runs' models averaged into one model, logged as a run
of its own with its model logged as a training run logs one, so that it is promoted,
served, predicted with and exported like any other.

The steps, in order: choose the members, load their networks, build the ensemble,
evaluate it and each member on MNIST's full test set, then open the run and log it.
Whatever can be refused is refused before the run opens: a bad request logs nothing.

Lineage on the run: tags `ensemble.members` (run ids, in member order), `ensemble.size`
and `ensemble.metric`; each member's logged model as a model input of the run; params
`member_<i>.run_id`, `.model`, `.model_id` (copied onto the logged model too).

`test_time_shift` N (`--test-time-shift N`): the ensemble of the members' bare networks
is wrapped in shifted views (core/views.py: the picture and four copies moved N pixels),
declared by the tag `test_time_augmentation` and the param `test_time_shift`; the
ensemble without them is recorded as `single_view_test_accuracy`. Unless it is given,
it is the views the members ship (trainer.test_time_shift) when they all ship the same:
averaging their shipped models would answer the same, but undeclared, and shift each
picture once per member. Members that differ join bare (0), as the summary says.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from digit_experiments.errors import EnsembleError, ModelError, RegistryError
from digit_experiments.reporting.groups import ENSEMBLE

DEFAULT_TOP = 3
MODEL = ENSEMBLE  # tags.model of an ensemble run (why it matters: reporting.groups)
PREFIX = "ensemble."
SAMPLES = 25  # images in the predictions grid, as tracking.sample_predictions' default
SEED = 42  # which samples the grid shows
MEMBERS_FILE = "reports/members.json"


@dataclass
class Member:
    run: object  # mlflow.entities.Run
    model_id: str
    score: float | None  # the run's own logged --metric (None: it has none)
    network: object = None  # keras.Model, once loaded
    test_accuracy: float | None = None  # on the ensemble's test set

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def family(self) -> str:
        return self.run.data.tags.get("model") or "model"


@dataclass
class Choice:
    members: list[Member]
    scope: str  # where they were chosen from, for messages
    parent: object = None  # the sweep's parent run they belong to: the ensemble nests under it


@dataclass
class Evaluated:
    """The ensemble and what it answered on the test set."""

    model: object  # keras.Model
    x_test: object
    y_test: object
    probabilities: object
    on: object  # inference.registry.Evaluation: which images, what they are called
    single_view: dict = field(default_factory=dict)  # with test-time shifts: without them
    test_time_shift: int = 0


@dataclass
class Result:
    run_id: str
    run_name: str
    experiment_id: str
    model_uri: str
    metrics: dict[str, float]
    choice: Choice
    evaluated_on: str
    nested_under: str | None = None
    test_time_shift: int = 0


def make(
    uri: str,
    *,
    parent: str | None = None,
    experiment: str | None = None,
    runs: list[str] | None = None,
    top: int = DEFAULT_TOP,
    metric: str = "test_accuracy",
    name: str | None = None,
    experiment_name: str | None = None,
    root: Path | None = None,
    test_time_shift: int | None = None,
) -> Result:
    """The ensemble of `runs`, or of the `top` best runs (by `metric`) of the sweep
    `parent` (default: the latest sweep) or of `experiment`; logged to the store at
    `uri` as a run named `name`, in `experiment_name` (default: the first member's);
    with `test_time_shift` pixels of shifted views (see the module)."""
    from digit_experiments.tracking import store

    store.connect(uri)  # models:/ URIs of the members resolve against this store
    client = store.client(uri)
    if test_time_shift is not None and test_time_shift < 0:
        raise EnsembleError(f"--test-time-shift must be >= 0, got {test_time_shift}")
    choice = choose(client, metric, top, parent, experiment, runs)
    if test_time_shift is None:
        test_time_shift = shipped_shift(choice.members)
    bare = build(choice.members)
    evaluated = evaluate(client, bare, choice.members, test_time_shift)
    return log_run(
        uri, client, choice, metric, evaluated, name, experiment_name, root or Path.cwd()
    )


# --- the members ----------------------------------------------------------------------


def choose(client, metric, top, parent=None, experiment=None, runs=None) -> Choice:
    """The members: the runs named, or the `top` best of a sweep or experiment."""
    if runs is not None:
        return Choice(named_runs(client, runs, metric), "the runs given (--runs)")
    if top < 2:
        raise EnsembleError(f"--top must be >= 2, got {top}")
    from digit_experiments.inference import registry
    from digit_experiments.tracking import search

    sweep = None
    if experiment is None:
        sweep = _sweep(client, parent, search)
        parent = sweep.info.run_id
    # Finished runs that are not a sweep's parent; refusals name --parent / --experiment.
    found = registry.candidate_runs(client, parent, experiment)
    scope = (
        f"experiment {experiment!r}"
        if experiment is not None
        else f"sweep {sweep.info.run_name!r} ({sweep.info.run_id})"
    )
    # An earlier ensemble is not a member: its members would count twice.
    found = [r for r in found if r.data.tags.get("model") != MODEL]
    scored = search.best_first(found, metric)
    if found and not scored:
        raise EnsembleError(f"--metric: no finished run of {scope} has a metric {metric!r}")
    members = []
    for run in scored:
        model_id = registry.logged_model_id(client, run)
        if model_id is None:
            continue  # trained with tracking.log_model=false: nothing to average
        members.append(Member(run, model_id, run.data.metrics[metric]))
        if len(members) == top:
            return Choice(members, scope, sweep)
    raise EnsembleError(
        f"--top {top}: {scope} has only {len(members)} finished run(s) with a logged model "
        f"and a metric {metric!r}"
    )


def _sweep(client, parent, search):
    from mlflow.exceptions import MlflowException

    if parent is None:
        sweep = search.latest_sweep(client)
        if sweep is None:
            raise EnsembleError(
                "no sweep found: pass --parent RUN_ID, --experiment NAME or --runs ID,ID"
            )
        return sweep
    try:
        return client.get_run(parent)
    except MlflowException:
        raise EnsembleError(f"--parent: no run {parent!r}") from None


def named_runs(client, run_ids: list[str], metric: str) -> list[Member]:
    """Exactly these runs, in this order: each must exist, be FINISHED and have a model."""
    from mlflow.exceptions import MlflowException

    from digit_experiments.inference import registry

    if len(run_ids) < 2:
        raise EnsembleError(f"--runs: an ensemble needs at least 2 runs, got {len(run_ids)}")
    members = []
    for run_id in run_ids:
        if run_ids.count(run_id) > 1:
            raise EnsembleError(f"--runs: run {run_id!r} is named twice")
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise EnsembleError(f"--runs: no run {run_id!r}") from None
        if run.info.status != "FINISHED":
            raise EnsembleError(f"--runs: run {run_id} is {run.info.status}, not FINISHED")
        model_id = registry.logged_model_id(client, run)
        if model_id is None:
            raise EnsembleError(
                f"--runs: run {run_id} has no logged model (trained with tracking.log_model=false?)"
            )
        members.append(Member(run, model_id, run.data.metrics.get(metric)))
    return members


# --- the model ------------------------------------------------------------------------


def shipped(member: Member) -> int:
    """The shift of the views a member ships (its trainer.test_time_shift; 0: none)."""
    return int(member.run.data.params.get("trainer.test_time_shift", 0))


def shipped_shift(members: list[Member]) -> int:
    """The shift of the views every member ships, 0 when none does or when they differ."""
    shifts = {shipped(m) for m in members}
    return shifts.pop() if len(shifts) == 1 else 0


def build(members: list[Member]):
    """Each member's network loaded (safe mode) and checked; the ensemble of them. A
    member that ships shifted views gives the network inside them: the ensemble's own
    views (if any) then shift each picture once, not once per member."""
    from digit_experiments.core import ensemble, views
    from digit_experiments.inference.loading import load_model
    from digit_experiments.inference.predictor import Predictor

    for member in members:
        try:
            member.network = load_model(f"models:/{member.model_id}")
        except ModelError as e:
            raise EnsembleError(f"run {member.run_id}: cannot load its model ({e})") from None
        member.network = views.inner(member.network)
    ensemble.check_compatible({f"run {m.run_id}": m.network for m in members})
    Predictor(members[0].network, f"run {members[0].run_id}")  # square one-channel pictures
    return ensemble.build([m.network for m in members])


def evaluate(client, model, members: list[Member], test_time_shift: int = 0) -> Evaluated:
    """The ensemble's probabilities on the test set its members share, the one `digits
    promote` judges each of them on: MNIST's full test set, or for members trained on a
    folder of pictures the test split they logged. Each member's accuracy on the same
    images goes into its `test_accuracy` (a run's own metric may come from a slice of the
    test set: data.test_limit). With `test_time_shift`, the model is wrapped in its
    shifted views, and what it answered without them is kept as `single_view`."""
    from digit_experiments.core import ensemble, views
    from digit_experiments.inference import registry
    from digit_experiments.inference.predictor import Predictor

    trained_on = {m.run_id: _trained_on(m.run) for m in members}
    if len(set(trained_on.values())) > 1:
        listed = "; ".join(f"run {run_id}: {data}" for run_id, data in trained_on.items())
        raise EnsembleError(
            f"the members were trained on different data, and an ensemble is judged on one "
            f"test set: {listed}"
        )
    try:
        on = registry.evaluation_set(client, members[0].run)
    except RegistryError as e:
        raise EnsembleError(str(e)) from None
    for member in members:
        predicted = Predictor(member.network).probabilities(on.x).argmax(axis=1)
        member.test_accuracy = float((predicted == on.y).mean())
    probabilities = Predictor(model).probabilities(on.x)
    if not test_time_shift:
        return Evaluated(model, on.x, on.y, probabilities, on)
    single_view = views.single_view(
        on.y, probabilities, ensemble.cross_entropy(on.y, probabilities)
    )
    try:
        model = views.wrap(model, test_time_shift)
    except ModelError as e:
        raise EnsembleError(f"--test-time-shift {test_time_shift}: {e}") from None
    probabilities = Predictor(model).probabilities(on.x)
    return Evaluated(model, on.x, on.y, probabilities, on, single_view, test_time_shift)


def _trained_on(run) -> str:
    """MNIST (whichever copy), or the folder of pictures the run was trained on."""
    params = run.data.params
    if params.get("data.source") == "folder":
        return f"the folder {params.get('data.path')}"
    return "MNIST"


def ensemble_metrics(y_test, probabilities, members: list[Member]) -> dict[str, float]:
    """A training run's test metrics for the ensemble, and its members' accuracies."""
    from digit_experiments.core import ensemble, evaluate

    metrics = evaluate.classification_metrics(y_test, probabilities.argmax(axis=1))
    metrics["test_loss"] = ensemble.cross_entropy(y_test, probabilities)
    accuracies = [m.test_accuracy for m in members]
    metrics.update({f"member_{i}_test_accuracy": a for i, a in enumerate(accuracies)})
    metrics["best_member_test_accuracy"] = max(accuracies)
    metrics["mean_member_test_accuracy"] = sum(accuracies) / len(accuracies)
    metrics["gain_over_best_member"] = metrics["test_accuracy"] - max(accuracies)
    return metrics


# --- the run --------------------------------------------------------------------------


def log_run(uri, client, choice, metric, evaluated, name, experiment_name, root) -> Result:
    """The ensemble's run: tags, params, model inputs, test metrics and reports, model."""
    from digit_experiments.app.run import dataset_digest, log_test_reports
    from digit_experiments.core import data, models
    from digit_experiments.inference import served
    from digit_experiments.tracking import lifecycle, lineage

    members, model = choice.members, evaluated.model
    x_test, y_test = evaluated.x_test, evaluated.y_test
    experiment_id = _experiment(uri, choice, experiment_name, root)
    # Nested under the members' sweep (where `digits promote --parent` and `digits
    # compare --parent` look) when it is logged in the sweep's experiment.
    parent = choice.parent
    nested = parent.info.run_id if parent and parent.info.experiment_id == experiment_id else None
    metrics = ensemble_metrics(y_test, evaluated.probabilities, members)
    metrics.update(evaluated.single_view)
    run_name = name or "-".join([MODEL, *(m.family for m in members)])
    with (
        tempfile.TemporaryDirectory(prefix="digits-ensemble-") as output_dir,
        lifecycle.tracked_run(
            uri,
            experiment_id,
            run_name,
            _tags(choice, metric, metrics, evaluated.test_time_shift),
            Path(output_dir),
            parent_run_id=nested,
        ) as record,
    ):
        folder = None if evaluated.on.mnist else members[0].run.data.params.get("data.path")
        params = _params(members, metric, len(y_test), model.count_params(), folder)
        record.params({**params, "test_time_shift": evaluated.test_time_shift})
        for m in members:
            lineage.log_input(client, record.run_id, m.model_id)
        record.dataset(
            x_test,
            y_test,
            name="mnist-test" if folder is None else "test-split",
            source=str(data.bundled_dir()) if folder is None else str(folder),
            digest=dataset_digest(x_test, y_test),
            context="testing",
        )
        if folder is not None:
            # Kept with the run, so that `digits promote` judges the ensemble on it too.
            lineage.log_test_split(client, record.run_id, x_test, y_test, Path(output_dir))
        record.metrics(metrics)
        record.json([_member_row(i, m, metric) for i, m in enumerate(members)], MEMBERS_FILE)
        record.text(models.summary_text(model), "reports/model_summary.txt")
        log_test_reports(record, x_test, y_test, evaluated.probabilities, SAMPLES, SEED)
        # The same MLflow model as a training run's: keras + the pyfunc serving pictures.
        model_uri = record.model(
            partial(served.save_model, model=model, examples=x_test[:5]), metrics
        )
    return Result(
        run_id=record.run_id,
        run_name=run_name,
        experiment_id=experiment_id,
        model_uri=model_uri,
        metrics=metrics,
        choice=choice,
        evaluated_on=evaluated.on.description,
        nested_under=nested,
        test_time_shift=evaluated.test_time_shift,
    )


def _experiment(uri, choice, experiment_name, root) -> str:
    """--experiment-name (created if need be), else the first member's experiment."""
    from mlflow.exceptions import MlflowException

    from digit_experiments.tracking import store

    if not experiment_name:
        return choice.members[0].run.info.experiment_id
    try:
        return store.ensure_experiment(experiment_name, uri, root)
    except MlflowException as e:
        raise EnsembleError(f"--experiment-name {experiment_name!r}: {e.message}") from None


def _tags(choice: Choice, metric: str, metrics: dict, test_time_shift: int) -> dict[str, str]:
    from digit_experiments.core import views
    from digit_experiments.reporting import describe
    from digit_experiments.tracking import provenance

    members = choice.members
    families = ", ".join(m.family for m in members)
    note = (
        f"{MODEL} of {len(members)} ({describe.md(families)}): "
        f"{describe.percent(metrics['test_accuracy'])} test accuracy, macro F1 "
        f"{metrics['test_f1_macro']:.4f}; best member "
        f"{describe.percent(metrics['best_member_test_accuracy'])}"
    )
    tags = {
        "model": MODEL,
        f"{PREFIX}members": ",".join(m.run_id for m in members),
        f"{PREFIX}size": str(len(members)),
        f"{PREFIX}metric": metric,
        f"{PREFIX}chosen_from": choice.scope,
        describe.NOTE_TAG: note,  # the run's description in MLflow's UI
        **provenance.tags(),
    }
    if test_time_shift:
        tags["test_time_augmentation"] = views.describe(test_time_shift)
    return tags


def _params(members: list[Member], metric: str, n_test: int, num_params: int, folder) -> dict:
    params = {
        f"{PREFIX}size": len(members),
        f"{PREFIX}metric": metric,
        # What the registry compares it on: MNIST's test set, or the split it logged.
        "data.source": "bundled" if folder is None else "folder",
        "data.n_test": n_test,
        "model.num_params": num_params,
    }
    if folder is not None:
        params["data.path"] = folder
    for i, m in enumerate(members):
        params[f"member_{i}.run_id"] = m.run_id
        params[f"member_{i}.model"] = m.family
        params[f"member_{i}.model_id"] = m.model_id
    return params


def _member_row(i: int, member: Member, metric: str) -> dict:
    return {
        "member": i,
        "run_id": member.run_id,
        "run_name": member.run.info.run_name,
        "model": member.family,
        "model_id": member.model_id,
        metric: member.score,  # as the run logged it
        "test_accuracy": member.test_accuracy,  # on the ensemble's test set
    }


def summary(result: Result) -> str:
    """What `digits ensemble` prints: the members, then the ensemble against them."""
    choice, metrics = result.choice, result.metrics
    lines = [f"members, from {choice.scope}:"]
    for i, m in enumerate(choice.members):
        shift = shipped(m)
        lines.append(
            f"  {i}. run {m.run_id} ({m.run.info.run_name}): test_accuracy {m.test_accuracy:.4f}"
            + (f" (its bare network: it ships views shifted {shift} px)" if shift else "")
        )
    where = f"nested under sweep run {result.nested_under}" if result.nested_under else "top-level"
    gain = metrics["gain_over_best_member"]
    lines += [
        f"ensemble: run {result.run_id} ({result.run_name}), experiment "
        f"{result.experiment_id}, {where}",
        f"  test_accuracy {metrics['test_accuracy']:.4f} on {result.evaluated_on}; best member "
        f"{metrics['best_member_test_accuracy']:.4f} ({gain:+.4f})",
        f"  model {result.model_uri}",
    ]
    if result.test_time_shift:
        lines.insert(
            -1,
            f"  in views shifted {result.test_time_shift} px (test-time augmentation); "
            f"without them {metrics['single_view_test_accuracy']:.4f}",
        )
    return "\n".join(lines)
