"""The trained model as an MLflow model of its run: what the Model Registry registers,
`mlflow models serve` serves and `models:/<model_id>` names.

Logged through the client, into the run's own experiment, as `mlflow.<flavor>.log_model`
would log it inside an active run: a LoggedModel with the run's params, linked to the
run as its output, with the run's test metrics, the model's files, READY at the end.
What the files are (flavors, signature, example) is the caller's `save` function's
business: the app passes inference.served's, which serves pictures.
"""

from __future__ import annotations

import os
import tempfile
import time

from digit_experiments.tracking import provenance

NAME = "model"


def log_model(client, save, run_id: str, metrics: dict[str, float]) -> str:
    """Log the MLflow model that `save(path, mlflow_model=..., pip_requirements=...)`
    writes into the folder `path` as the output of run `run_id`, with `metrics` (the
    run's step-0 test metrics); returns its models:/ URI."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model
    from mlflow.tracking.context import registry as context

    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=NAME,
        source_run_id=run_id,
        tags=context.resolve_tags(),
        params={key: str(value) for key, value in run.data.params.items()},
    )
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric(key, float(value), now, 0, model_id=logged.model_id)
            for key, value in metrics.items()
        ],
    )
    description = Model(
        artifact_path=logged.artifact_location,
        run_id=run_id,
        model_uuid=logged.model_id,
        model_id=logged.model_id,
    )
    with tempfile.TemporaryDirectory(prefix="digits-model-") as tmp:
        path = os.path.join(tmp, NAME)
        save(path, mlflow_model=description, pip_requirements=provenance.requirements())
        client.log_model_artifacts(logged.model_id, path)
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return f"models:/{logged.model_id}"
