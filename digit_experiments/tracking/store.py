"""Where runs go: the tracking URI, whether its server is there, and the experiment.

Light to import (MLflow is imported inside the functions that need it): a run checks
that its tracking server answers before TensorFlow or MLflow is imported at all.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from digit_experiments.errors import ParentRunMissing, TrackingDenied, TrackingUnavailable
from digit_experiments.tracking.redaction import redact

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow retries a failed request 7 times with backoff factor 2 (about 4 minutes) before
# it gives up: training would stall that long at the first epoch after a server went
# away. 3 retries, 1 s doubling: 7 s. The user's settings win.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# What MLflow's client says when those retries ran out: every try was refused, dropped or
# answered 5xx (a server restarting, its database restarting).
RETRIES_EXHAUSTED = "Max retries exceeded"


def resolve_tracking_uri(configured: str | None, root: Path) -> str:
    """The store a run logs to: tracking.uri, else $MLFLOW_TRACKING_URI, else the embedded
    sqlite:///mlflow.db in `root`. A relative SQLite path is taken against `root`, never
    against a job's working directory, so sweeps and `hydra.job.chdir=true` runs all land
    in the one database that `mlflow ui` (started in `root`) shows."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((root / uri[len(prefix) :]).resolve())
    return uri


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when an HTTP tracking server is not there. MLflow's own client retries
    every call with backoff for minutes; without this check a wrong URI would surface
    only after that, or after training. Any HTTP answer (even 401/404) means a server is
    listening; only a refused, unresolvable or silent address is an error."""
    if not is_http(uri):
        return
    parts = urllib.parse.urlsplit(uri)
    # Credentials in the URI stay out of the probe (and of the message).
    health = urllib.parse.urlunsplit(
        (
            parts.scheme,
            parts.hostname + (f":{parts.port}" if parts.port else ""),
            parts.path.rstrip("/") + "/health",
            "",
            "",
        )
    )
    try:
        urllib.request.urlopen(health, timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(
            f"tracking server {redact(uri)} is unreachable ({reason}); start it "
            "(mlflow server --host 127.0.0.1 --port ...) or set tracking.uri / "
            "MLFLOW_TRACKING_URI to a store that is there"
        ) from None


def check_credentials(uri: str, timeout: float = 10.0) -> None:
    """Fail fast when an HTTP tracking server refuses us: one request with the
    credentials MLflow will send (MLFLOW_TRACKING_USERNAME/PASSWORD, or
    MLFLOW_TRACKING_TOKEN), before anything is trained. 401: no or wrong credentials;
    403: this user may not use the server's experiments. Neither value is ever shown."""
    if not is_http(uri):
        return
    import base64

    base = uri.rstrip("/")
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code == 401:
            given = "were refused" if (user and password) or token else "are needed"
            raise TrackingDenied(
                f"tracking server {redact(uri)} asks for a user and password, and the "
                f"credentials {given} (401): set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD"
            ) from None
        if e.code == 403:
            raise TrackingDenied(
                f"tracking server {redact(uri)} refuses user {user!r} (403): ask its "
                "admin for permission on the experiment"
            ) from None
    except (urllib.error.URLError, OSError):
        pass  # not there: check_reachable says so


def wait_until_reachable(uri: str, seconds: float, poll: float = 1.0) -> bool:
    """Whether the server at `uri` answers within `seconds` (polled; True at once for a
    store that is not a server)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            check_reachable(uri, timeout=min(2.0, max(poll, 0.1)))
            return True
        except TrackingUnavailable:
            if time.monotonic() >= deadline:
                return False
        time.sleep(poll)


def check_exists(uri: str) -> None:
    """Refuse an SQLite store whose file is not there: MLflow would create an empty one
    wherever the command was started (running all its migrations, seconds) only to say
    that the model is not in it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix) :])
        if not path.is_file():
            raise TrackingUnavailable(
                f"no MLflow store at {path}: train a model first "
                "(python -m digit_experiments.train) or pass --tracking-uri"
            )


def check_server(uri: str, patience: float = 0.0) -> None:
    """An HTTP tracking server that is not there, or refuses our credentials, refused in
    seconds (check_reachable, check_credentials), after waiting `patience` seconds for
    one that is away. Nothing heavy is imported: a run asks this before TensorFlow."""
    if patience > 0:
        wait_until_reachable(uri, patience)
    check_reachable(uri)
    check_credentials(uri)


def connect(uri: str, patience: float = 0.0) -> None:
    """Point MLflow at `uri`, once it is known to be there: the `models:/` and `runs:/`
    URIs of a run's logged model resolve against it. With credentials in the URI,
    MLflow's own "View run at <uri>/..." lines would print them: those are turned off.
    `patience`: seconds to wait for a server that is away before saying so."""
    import mlflow

    check_server(uri, patience)
    if redact(uri) != uri:
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if is_http(uri):
        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)


def client(uri: str, patience: float = 0.0):
    """An MlflowClient for `uri`: every read and write of a run goes through one. With
    `patience` (seconds) and a tracking server, a PatientClient."""
    from mlflow.tracking import MlflowClient

    mlflow_client = MlflowClient(tracking_uri=uri)
    if patience > 0 and is_http(uri):
        return PatientClient(mlflow_client, uri, patience)
    return mlflow_client


class PatientClient:
    """An MlflowClient whose calls outlast a tracking server that is away for a while.

    MLflow's own retries give up after seconds (HTTP_RETRIES), but a team's server or
    its database restarted for an upgrade is away longer, and a run would fail at
    whatever call it was making then. Here a call that failed that way waits up to
    `patience` seconds (tracking.reconnect_timeout) for the server to answer, and is
    made again; past that, its error is raised. An answer, even an error, is never
    waited on. Making a call again is what MLflow's retries did already; a metric
    keeps its timestamp, so one the server took before it went is a duplicate MLflow
    drops. `at_once` is the plain client, for calls that must not wait (a run's
    epochs: training goes on)."""

    def __init__(self, at_once, uri: str, patience: float):
        self.at_once = at_once
        self.uri = uri
        self.patience = patience

    def __getattr__(self, name: str):
        attribute = getattr(self.at_once, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def patient(*args, **kwargs):
            deadline = None
            while True:
                try:
                    return attribute(*args, **kwargs)
                except Exception as e:
                    if RETRIES_EXHAUSTED not in str(e):
                        raise
                    if deadline is None:
                        deadline = time.monotonic() + self.patience
                        log.warning(
                            "the tracking server %s did not take %s; waiting up to %.0f s "
                            "for it to come back (tracking.reconnect_timeout)",
                            redact(self.uri),
                            name,
                            self.patience,
                        )
                    left = deadline - time.monotonic()
                    if left <= 0 or not wait_until_reachable(self.uri, left):
                        raise
                    log.info("the tracking server answers again: %s, again", name)

        return patient


def ensure_experiment(name: str, uri: str, root: Path, patience: float = 0.0) -> str:
    """The id of experiment `name`, created if needed; safe when several jobs race."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(uri, patience)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise MlflowException(
                f"tracking.experiment: experiment {name!r} is deleted in {redact(uri)}; "
                "restore it (mlflow experiments restore) or choose another name"
            )
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:"):
        # MLflow would put artifacts in ./mlruns of whatever directory this process is in;
        # pin them beside the database instead.
        location = (root / "mlruns" / slug(name)).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another job created it between our lookup and create.
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def parent_experiment(parent_run_id: str, uri: str, patience: float = 0.0) -> str:
    """The experiment of the run a run nests under (children are shown nested only in
    their parent's experiment). A parent the store does not have is refused in one line:
    the run would otherwise become a top-level run of some other store."""
    from mlflow.exceptions import MlflowException

    try:
        return client(uri, patience).get_run(parent_run_id).info.experiment_id
    except MlflowException as e:
        raise ParentRunMissing(
            f"tracking.parent_run_id: parent run {parent_run_id} is not in {redact(uri)} "
            f"({str(e).splitlines()[0][:200]}); a sweep's job must log to the sweep's store "
            "(tracking.uri or MLFLOW_TRACKING_URI as the sweep had it)"
        ) from None


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"
