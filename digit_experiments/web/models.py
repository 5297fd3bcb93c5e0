"""What the web app shows about models, read from the tracking store: the registry's
versions and aliases, where each came from, and which models to compare by default.

Plain functions over an MlflowClient (no Streamlit), so they are tested directly and the
page stays a thin layout.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from digit_experiments.errors import RegistryError, TrackingUnavailable
from digit_experiments.tracking import search, store

CHAMPION, CHALLENGER = "champion", "challenger"
# Where `make ui` serves the embedded store; a tracking server is its own UI.
DEFAULT_UI = "http://127.0.0.1:5000"
# The tag `digits promote` gives a version: its accuracy on the full MNIST test set.
FULL_TEST_TAG = "full_test_test_accuracy"


@dataclass
class Version:
    """One registered version, with what a user asks about it."""

    version: str
    aliases: list[str]
    test_accuracy: float | None
    run_id: str
    run_name: str
    experiment_id: str
    sweep: str  # the sweep's parent run name ("" for a run of its own)
    created: int  # ms since the epoch


def open_store(uri: str):
    """An MlflowClient for `uri`, refusing a store that is not there rather than creating
    an empty one (an SQLite file that does not exist, a server that does not answer)."""
    store.check_exists(uri)
    store.connect(uri)  # an HTTP server that does not answer raises TrackingUnavailable
    return store.client(uri)


def versions(client, name: str) -> list[Version]:
    """Every version of registered model `name`, newest first ([] when it is not
    registered)."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}'")
        aliases = _aliases(client, name)
    except MlflowException as e:
        if "RESOURCE_DOES_NOT_EXIST" in str(e.error_code):
            return []
        raise TrackingUnavailable(f"cannot read the registry: {e.message}") from e
    rows = []
    for v in found:
        run = _run(client, v.run_id)
        parent = run.data.tags.get(search.PARENT_TAG) if run else None
        sweep = _run(client, parent) if parent else None
        rows.append(
            Version(
                version=str(v.version),
                aliases=sorted(aliases.get(str(v.version), [])),
                test_accuracy=_accuracy(v, run),
                run_id=v.run_id or "",
                run_name=run.info.run_name if run else "",
                experiment_id=run.info.experiment_id if run else "",
                sweep=sweep.info.run_name if sweep else "",
                created=int(v.creation_timestamp or 0),
            )
        )
    return sorted(rows, key=lambda r: int(r.version), reverse=True)


def _accuracy(version, run) -> float | None:
    """Accuracy on all of MNIST's test set, as `digits promote` measured it for every
    candidate (so versions compare fairly); else what the run logged on its test slice."""
    measured = (version.tags or {}).get(FULL_TEST_TAG)
    if measured:
        return float(measured)
    return run.data.metrics.get("test_accuracy") if run else None


def _aliases(client, name: str) -> dict[str, list[str]]:
    by_version: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    return by_version


def _run(client, run_id: str | None):
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None  # a deleted run: the version stays usable


def default_models(found: list[Version], name: str) -> list[str]:
    """Champion and challenger, side by side (whichever of them exist); else the newest
    version. Raises RegistryError, saying how to register one, when there is none."""
    if not found:
        raise RegistryError(
            f"no model is registered as {name!r} yet: train one "
            "(python -m digit_experiments.train) and register it with "
            "`digits promote --experiment digit-experiments`"
        )
    present = {alias for v in found for alias in v.aliases}
    chosen = [f"models:/{name}@{a}" for a in (CHAMPION, CHALLENGER) if a in present]
    return chosen or [f"models:/{name}/{found[0].version}"]


def pinned(uri: str, found: list[Version], name: str) -> str:
    """The URI with an alias of `name` replaced by the version it points to now: models
    are cached by what they are, so a promotion is seen without a restart."""
    prefix = f"models:/{name}@"
    if uri.startswith(prefix):
        alias = uri[len(prefix) :]
        for v in found:
            if alias in v.aliases:
                return f"models:/{name}/{v.version}"
        raise RegistryError(f"{uri}: no version of {name!r} has the alias {alias!r}")
    return uri


def label(uri: str, found: list[Version], name: str) -> str:
    """How a model is called on the page: `champion (version 3)`, `version 2`, or the
    URI itself for anything outside the registered model."""
    prefix = f"models:/{name}"
    if uri.startswith(prefix + "@"):
        alias = uri[len(prefix) + 1 :]
        version = pinned(uri, found, name).rsplit("/", 1)[1]
        return f"{alias} (version {version})"
    if uri.startswith(prefix + "/"):
        return f"version {uri[len(prefix) + 1 :]}"
    return uri


def slug(text: str) -> str:
    """`champion (version 3)` -> `champion-version-3`: a name for the page's elements."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def ui_base(tracking_uri: str, ui_url: str | None = None) -> str:
    """The MLflow UI that shows this store: a tracking server serves its own UI (its
    credentials left out); the embedded store is shown by `mlflow ui` at `ui_url`."""
    if ui_url:
        return ui_url.rstrip("/")
    if store.is_http(tracking_uri):
        parts = urllib.parse.urlsplit(tracking_uri)
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return DEFAULT_UI


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
