"""The Model Registry: promote the best run's model, champion against challenger.

Registry stages are deprecated in MLflow 3, so promotion uses aliases: `champion` is
the version to serve; a candidate that does not beat it becomes `challenger`. Both are
compared on the same data, by loading each model and evaluating it here, so that runs
made on different test slices are compared fairly: the full MNIST test set (bundled)
for a run trained on MNIST, as always; for a run trained on a folder of pictures
(data.source=folder, a fine-tuned model), that run's own test split, which it logged
(data/test_split.npz): a model made for other digits is judged on those digits, and
the champion it is to replace is judged on the same images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from digit_experiments.errors import RegistryError
from digit_experiments.tracking import lineage, search

log = logging.getLogger(__name__)

DEFAULT_NAME = "mnist-digit-classifier"
CHAMPION, CHALLENGER = "champion", "challenger"
# Metrics that are re-computed on the full test set for both models.
TEST_METRICS = ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro")
# A fine-tuned run's lineage metrics, copied to its version's tags too.
FINETUNE_METRICS = ("baseline_test_accuracy", "mnist_test_accuracy")
MNIST_TEST = "the MNIST test set (10,000 images)"


@dataclass
class Evaluation:
    """The images a promotion compares models on, and what to call them."""

    x: object  # (N, 28, 28, 1) float32
    y: object
    description: str
    mnist: bool  # the full MNIST test set (else a run's own test split)


@dataclass
class Plan:
    """What `promote` will do, and why (shown by --dry-run, then applied)."""

    name: str
    metric: str
    run: Run
    model_id: str
    candidate_score: float
    champion_version: str | None = None
    champion_run_id: str | None = None
    champion_score: float | None = None
    existing_version: str | None = None  # the candidate's model is already registered
    action: str = ""  # "champion", "challenger" or "none"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    evaluated_on: str = MNIST_TEST
    on_mnist: bool = True


def candidate_runs(
    client: MlflowClient,
    parent: str | None = None,
    experiment: str | None = None,
    filter_string: str | None = None,
) -> list[Run]:
    """Finished runs that logged a model: of a sweep (default: the latest one), or of an
    experiment, optionally narrowed by an MLflow search filter."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise RegistryError(f"--experiment: no experiment named {experiment!r}")
        experiment_ids = [found.experiment_id]
        scope = [f"experiment {experiment!r}"]
        conditions = []
    else:
        if parent is None:
            sweep = search.latest_sweep(client)
            if sweep is None:
                raise RegistryError("no sweep found: pass --experiment NAME or --parent RUN_ID")
        else:
            try:
                sweep = client.get_run(parent)
            except MlflowException as e:
                raise RegistryError(f"--parent: no run {parent!r}") from e
        experiment_ids = [sweep.info.experiment_id]
        scope = [f"sweep {sweep.info.run_name!r} ({sweep.info.run_id})"]
        conditions = [f"tags.`{search.PARENT_TAG}` = '{sweep.info.run_id}'"]
    conditions.append("attributes.status = 'FINISHED'")
    if filter_string:
        conditions.append(filter_string)  # MLflow's search syntax has no parentheses
        scope.append(f"filter {filter_string!r}")
    try:
        runs = search.all_runs(client, experiment_ids, " and ".join(conditions))
    except MlflowException as e:
        raise RegistryError(f"--filter: {e.message}") from e
    runs = [r for r in runs if not search.is_sweep(r)]
    if not runs:
        raise RegistryError(f"no finished runs in {', '.join(scope)}")
    return runs


def logged_model_id(client: MlflowClient, run: Run) -> str | None:
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    return models[0].model_id if models else None


def plan_promotion(
    client: MlflowClient,
    runs: list[Run],
    name: str = DEFAULT_NAME,
    metric: str = "test_accuracy",
    force: bool = False,
) -> Plan:
    """Pick the best run by `metric` and decide what happens to the aliases."""
    ranked = search.best_first(runs, metric)
    if not ranked:
        raise RegistryError(f"--metric: no run has a metric {metric!r}")
    best = next((r for r in ranked if logged_model_id(client, r)), None)
    if best is None:
        raise RegistryError(
            f"none of the {len(ranked)} runs logged a model (tracking.log_model=false?)"
        )
    model_id = logged_model_id(client, best)
    plan = Plan(name=name, metric=metric, run=best, model_id=model_id, candidate_score=0.0)
    if best is not ranked[0]:
        plan.notes.append(f"best run {ranked[0].info.run_id} has no logged model; skipped")
    passed_over = [
        r for r in ranked if search.on_a_test_slice(r, metric) and _better(r, best, metric)
    ]
    if passed_over and not search.on_a_test_slice(best, metric):
        plan.notes.append(
            f"{len(passed_over)} run(s) with a better logged {metric} measured it on a "
            f"slice of the test set (data.test_limit), e.g. {passed_over[0].info.run_id}: "
            f"ranked after the runs measured on all of it"
        )

    for version in client.search_model_versions(
        f"name = '{name}' and run_id = '{best.info.run_id}'"
    ):
        plan.existing_version = version.version
    champion = _version_by_alias(client, name, CHAMPION)
    evaluation = evaluation_set(client, best) if metric in TEST_METRICS else None
    if evaluation is not None:
        plan.evaluated_on, plan.on_mnist = evaluation.description, evaluation.mnist
        if not evaluation.mnist and name == DEFAULT_NAME:
            plan.notes.append(
                f"note: run {best.info.run_id} was trained on a folder of pictures and is "
                f"compared on its test split, not MNIST's; --name NAME keeps it apart from "
                f"{DEFAULT_NAME}"
            )
    plan.candidate_score = score(f"models:/{model_id}", best, metric, evaluation)
    if champion is not None:
        plan.champion_version = champion.version
        plan.champion_run_id = champion.run_id
        champion_run = client.get_run(champion.run_id)
        plan.champion_score = score(
            f"models:/{name}/{champion.version}", champion_run, metric, evaluation
        )

    if champion is not None and champion.run_id == best.info.run_id:
        plan.action, plan.reason = "none", f"run {best.info.run_id} is already {CHAMPION}"
    elif champion is None:
        plan.action, plan.reason = CHAMPION, f"there is no {CHAMPION} yet"
    elif _beats(plan.candidate_score, plan.champion_score, metric):
        plan.action = CHAMPION
        plan.reason = (
            f"{metric} {plan.candidate_score:.4f} beats the {CHAMPION}'s "
            f"{plan.champion_score:.4f} (version {champion.version})"
        )
    elif force:
        plan.action = CHAMPION
        plan.reason = (
            f"forced: {metric} {plan.candidate_score:.4f} does not beat the "
            f"{CHAMPION}'s {plan.champion_score:.4f} (version {champion.version})"
        )
    else:
        plan.action = CHALLENGER
        plan.reason = (
            f"not promoted: {metric} {plan.candidate_score:.4f} does not beat the "
            f"{CHAMPION}'s {plan.champion_score:.4f} (version {champion.version})"
        )
    return plan


def _beats(score: float, other: float, metric: str) -> bool:
    return score < other if search.lower_is_better(metric) else score > other


def _better(run: Run, other: Run, metric: str) -> bool:
    return _beats(run.data.metrics[metric], other.data.metrics[metric], metric)


def score(model_uri: str, run: Run, metric: str, evaluation: Evaluation | None = None) -> float:
    """`metric` for a model: test metrics re-computed on `evaluation`'s images (default:
    the full MNIST test set); any other metric as the run logged it."""
    if metric not in TEST_METRICS:
        return float(run.data.metrics[metric])
    from digit_experiments.core import evaluate
    from digit_experiments.inference.predictor import Predictor

    evaluation = evaluation or mnist_evaluation()
    predicted = Predictor.load(model_uri).probabilities(evaluation.x).argmax(axis=1)
    return evaluate.classification_metrics(evaluation.y, predicted)[metric]


def mnist_evaluation() -> Evaluation:
    from digit_experiments.core import data

    arrays = data.load_idx_dir(data.bundled_dir())
    x_test = data.to_model_input(arrays["test_images"])
    return Evaluation(x_test, arrays["test_labels"], MNIST_TEST, mnist=True)


def evaluation_set(client: MlflowClient, run: Run) -> Evaluation:
    """What to compare `run`'s model and the champion on: the full MNIST test set, or,
    for a run trained on a folder of pictures, the test split that run logged."""
    if run.data.params.get("data.source") != "folder":
        return mnist_evaluation()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="digits-promote-") as tmp:
        split = lineage.load_test_split(client, run.info.run_id, Path(tmp))
    if split is None:
        raise RegistryError(
            f"run {run.info.run_id} was trained on a folder of pictures but has no "
            f"{lineage.TEST_SPLIT} to compare models on"
        )
    x, y = split
    folder = run.data.params.get("data.path", "a folder")
    description = f"the test split of run {run.info.run_id} ({len(y):,} images of {folder})"
    return Evaluation(x, y, description, mnist=False)


def apply(client: MlflowClient, plan: Plan) -> str | None:
    """Carry out a plan; returns the version that now holds the candidate (None: no-op)."""
    if plan.action == "none":
        return plan.champion_version
    version = plan.existing_version
    if version is None:
        version = _register(client, plan)
    run = plan.run
    tags = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "model_family": run.data.tags.get("model", ""),
        "optimizer": run.data.tags.get("optimizer", ""),
        "regularization": run.data.tags.get("regularization", ""),
        "overrides": run.data.tags.get("overrides", ""),
        "evaluated_on": plan.evaluated_on,
        # full_test_*: on all of MNIST's test set (what the web app shows); split_test_*:
        # on a folder run's own test split.
        f"{'full' if plan.on_mnist else 'split'}_test_{plan.metric}": f"{plan.candidate_score:.4f}",
        "promotion": plan.reason,
    }
    for key in ("finetune.source_uri", "finetune.source_name", "finetune.source_version"):
        if key in run.data.tags:
            tags[key] = run.data.tags[key]
    for key in TEST_METRICS + FINETUNE_METRICS:
        if key in run.data.metrics:
            tags[key] = f"{run.data.metrics[key]:.4f}"
    for key, value in tags.items():
        client.set_model_version_tag(plan.name, version, key, value)
    client.update_model_version(
        plan.name,
        version,
        description=(
            f"{run.info.run_name} (run {run.info.run_id}): {plan.metric} "
            f"{plan.candidate_score:.4f} on {plan.evaluated_on}. {plan.reason}."
        ),
    )
    client.set_registered_model_alias(plan.name, plan.action, version)
    return version


def _register(client: MlflowClient, plan: Plan) -> str:
    """A new version of the registered model (created if needed) from the candidate's
    logged model, as mlflow.register_model would make it."""
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(plan.name)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    version = client.create_model_version(
        plan.name,
        f"models:/{plan.model_id}",
        run_id=plan.run.info.run_id,
        model_id=plan.model_id,
    )
    return version.version


def describe(plan: Plan) -> str:
    run = plan.run
    lines = [
        f"candidate: run {run.info.run_id} ({run.info.run_name}), {plan.metric} "
        f"{plan.candidate_score:.4f} on {plan.evaluated_on}",
        f"{CHAMPION}: "
        + (
            f"version {plan.champion_version} (run {plan.champion_run_id}), "
            f"{plan.metric} {plan.champion_score:.4f}"
            if plan.champion_version
            else "none"
        ),
        *plan.notes,
    ]
    if plan.action == "none":
        lines.append(f"nothing to do: {plan.reason}")
    else:
        target = f"version {plan.existing_version}" if plan.existing_version else "a new version"
        lines.append(f"-> {plan.name}: {target} gets alias {plan.action!r} ({plan.reason})")
    return "\n".join(lines)


def _version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
