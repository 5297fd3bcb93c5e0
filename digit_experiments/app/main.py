"""The Hydra entry point: `python -m digit_experiments.train` (also `digits-train`).

    python -m digit_experiments.train                       # the seed's CNN, Adam, dropout
    python -m digit_experiments.train model=mlp optimizer=sgd
    python -m digit_experiments.train -m model=mlp,cnn      # a sweep: one parent run
    python -m digit_experiments.train --cfg job             # the composed config, instantly

`main` is a few lines around `run.train(cfg)`, which tests and sweeps call too. What
the user can fix (a bad value, bad data, an absent server, a diverging run) ends in one
line on stderr and an exit code, never a traceback. TensorFlow and MLflow are imported
only once the config has been validated, so --help, --cfg and a bad override answer at
once.
"""

from __future__ import annotations

import sys
import warnings

import hydra
from omegaconf import DictConfig

from digit_experiments.app.help import CONF_DIR, fast_help
from digit_experiments.app.resolvers import register_resolvers
from digit_experiments.app.runtime import hydra_runtime
from digit_experiments.core.config import register_configs, validate
from digit_experiments.errors import ConfigError, DigitsError, Terminated, TrainingDiverged
from digit_experiments.tracking.redaction import redact, redact_console, redact_logs

register_configs()
register_resolvers()
# conf/hydra/launcher/{ray,submitit_local,submitit_slurm}.yaml set the plugins' launchers
# up for this project under the plugins' own names (what users type), so Hydra checks
# each file against the plugin's schema of the same name, as wanted, and warns that this
# matching is deprecated: nothing a user can act on.
warnings.filterwarnings(
    "ignore",
    message=r"\s*'hydra/launcher/(ray|submitit_local|submitit_slurm)' is validated against",
    category=UserWarning,
)
# Without the `cluster` extra, Hydra's plugin scan cannot import our Ray launcher (it
# extends hydra-ray-launcher's) and warns on every run; only hydra/launcher=ray needs it,
# and choosing that without the extra fails with Hydra's own error naming the launcher.
warnings.filterwarnings(
    "ignore",
    message=r"\s*Error importing 'hydra_plugins\.digits_launchers\.ray_launcher'",
    category=UserWarning,
)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the best validation accuracy (for sweepers)."""
    from digit_experiments.app.run import record_refused, train

    try:
        validate(cfg)
    except ConfigError as e:
        record_refused(cfg, e)  # in a sweep: a FAILED child run says why
        _refuse(e, exit_code=2)
    try:
        return train(cfg)["best_val_accuracy"]
    except DigitsError as e:
        message = str(e)
        if isinstance(e, TrainingDiverged):
            message += "; the MLflow run ended FAILED with its curves"
        _refuse(e, exit_code=1, message=message)
    except KeyboardInterrupt as e:
        # The run is already ended KILLED, its checkpoint and curves logged. Exit as a
        # process killed by that signal would (128 + signal number).
        reason = str(e) or "interrupted (SIGINT)"
        _refuse(
            e,
            exit_code=143 if isinstance(e, Terminated) else 130,
            message=f"{reason}; the MLflow run ended KILLED with what it had logged",
        )


def _refuse(error: BaseException, exit_code: int, message: str | None = None) -> None:
    """A user's mistake or a stop: one clear line, no traceback (in a sweep, the error
    goes to Hydra: a failed job is recorded and the sweep goes on; Ctrl-C ends it)."""
    runtime = hydra_runtime()
    if runtime and runtime.multirun:
        raise error
    print(f"digits-train: {redact(message or str(error))}", file=sys.stderr)
    sys.exit(exit_code)


def cli() -> None:
    """Console entry point (`digits-train`, `python -m digit_experiments.train`)."""
    redact_console()  # tracebacks and Hydra's own prints too, not only log records
    if fast_help(sys.argv[1:]):
        return
    redact_logs()  # before Hydra logs anything
    main()
