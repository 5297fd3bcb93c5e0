"""Where a fine-tuned model came from: `model.init_from`'s URI resolved against the
store, as the tags a run records (`finetune.source_*`).

    models:/NAME@ALIAS      registered name, alias, version, its run and logged model
    models:/NAME/VERSION    registered name, version, its run and logged model
    models:/MODEL_ID        the logged model and its run
    runs:/RUN_ID/PATH       the run (and its logged model named PATH, if that is one)
    a .h5 / .keras file     its absolute path and sha256

An alias moves; the version it pointed to when the run started is what the tags keep.
A URI the store does not know is refused naming it (ModelError), before a run opens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from digit_experiments.errors import ModelError

PREFIX = "finetune.source_"


@dataclass
class Lineage:
    uri: str
    tags: dict[str, str] = field(default_factory=dict)  # finetune.source_* -> value
    model_id: str | None = None  # a LoggedModel: the run's model input
    # runs:/RUN_ID/PATH naming a .h5/.keras artifact: (run id, artifact path) to download.
    artifact: tuple[str, str] | None = None


def resolve(client, uri: str) -> Lineage:
    """The lineage of `uri` (see the module); ModelError if the store does not know it."""
    from mlflow.exceptions import MlflowException

    lineage = Lineage(uri, {f"{PREFIX}uri": uri})
    try:
        if uri.startswith("models:/"):
            _registered(client, uri[len("models:/") :], lineage)
        elif uri.startswith("runs:/"):
            _run(client, uri[len("runs:/") :], lineage)
        else:
            _file(Path(uri).expanduser(), lineage)
    except MlflowException as e:
        raise ModelError(f"model.init_from={uri}: {e.message.splitlines()[0]}") from None
    if lineage.model_id:
        lineage.tags[f"{PREFIX}model_id"] = lineage.model_id
    return lineage


def _registered(client, rest: str, lineage: Lineage) -> None:
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
        lineage.tags[f"{PREFIX}alias"] = alias
    elif "/" in rest:
        name, number = rest.split("/", 1)
        if not number.isdigit():
            raise ModelError(
                f"model.init_from=models:/{rest}: name a version by its number or an alias "
                "(models:/NAME/3, models:/NAME@champion)"
            )
        version = client.get_model_version(name, number)
    else:
        logged = client.get_logged_model(rest)
        lineage.model_id = logged.model_id
        if logged.source_run_id:
            lineage.tags[f"{PREFIX}run_id"] = logged.source_run_id
        return
    lineage.tags[f"{PREFIX}name"] = version.name
    lineage.tags[f"{PREFIX}version"] = str(version.version)
    if version.run_id:
        lineage.tags[f"{PREFIX}run_id"] = version.run_id
    # MLflow 3 registers a logged model (source models:/MODEL_ID); some stores leave the
    # version's model_id empty, its source says it.
    source = version.source or ""
    from_source = source[len("models:/") :] if source.startswith("models:/m-") else None
    lineage.model_id = getattr(version, "model_id", None) or from_source


def _run(client, rest: str, lineage: Lineage) -> None:
    run_id, _, path = rest.partition("/")
    run = client.get_run(run_id)
    lineage.tags[f"{PREFIX}run_id"] = run_id
    if Path(path).suffix in (".h5", ".keras"):
        lineage.artifact = (run_id, path)
        return
    if path:
        found = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
        )
        named = [m for m in found if m.name == path.strip("/")]
        if named:
            lineage.model_id = named[0].model_id


def _file(path: Path, lineage: Lineage) -> None:
    if not path.is_file():
        return  # loading says what is wrong with it
    lineage.tags[f"{PREFIX}file"] = str(path.resolve())
    lineage.tags[f"{PREFIX}sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def download(client, lineage: Lineage, dest: Path) -> Path:
    """A runs:/ URI's .h5/.keras artifact, downloaded into `dest`."""
    from mlflow.exceptions import MlflowException

    run_id, path = lineage.artifact
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, path, str(dest)))
    except (MlflowException, OSError) as e:
        raise ModelError(f"model.init_from={lineage.uri}: cannot download it ({e})") from None


def log_input(client, run_id: str, model_id: str) -> None:
    """The source model as an input of the run (MLflow's model inputs: the UI links it)."""
    from mlflow.entities import LoggedModelInput

    client.log_inputs(run_id, models=[LoggedModelInput(model_id)])


# --- the test split a run was evaluated on -------------------------------------------

# Runs on data other than MNIST (data.source=folder) keep their test split here, so that
# `digits promote` can compare models on the data the run was made for.
TEST_SPLIT = "data/test_split.npz"


def log_test_split(client, run_id: str, x, y, folder: Path) -> None:
    """The run's test images (float32, as the model saw them) and labels, compressed."""
    import numpy as np

    path = Path(folder) / Path(TEST_SPLIT).name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_test=x, y_test=y)
    client.log_artifact(run_id, str(path), str(Path(TEST_SPLIT).parent))


def load_test_split(client, run_id: str, dest: Path):
    """(x_test, y_test) that `log_test_split` logged for `run_id`, or None if it has none."""
    import numpy as np
    from mlflow.exceptions import MlflowException

    try:
        local = client.download_artifacts(run_id, TEST_SPLIT, str(dest))
    except (MlflowException, OSError):
        return None
    with np.load(local, allow_pickle=False) as arrays:
        return arrays["x_test"], arrays["y_test"]
