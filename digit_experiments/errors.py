"""Every error the project raises on purpose, in one module that imports nothing.

Any layer, and any caller, can catch any of them without importing Keras or MLflow:
the entry points turn each into one clear line and an exit code, never a traceback.
"""

from __future__ import annotations


class DigitsError(Exception):
    """Something the user can fix: said in one line, without a traceback."""


class ConfigError(DigitsError, ValueError):
    """A config value that composes but makes no sense (out of range, unknown choice)."""


class DataError(DigitsError, ValueError):
    """A data file that is missing, damaged, or not what it claims to be."""


class ImageError(DigitsError, ValueError):
    """A picture or array in which no digit can be found, or that cannot be read."""


class ModelError(DigitsError):
    """A model that cannot be found or loaded, or that does not fit the data."""


class RegistryError(DigitsError):
    """Something asked of the Model Registry that the store cannot give."""


class TrackingUnavailable(DigitsError, RuntimeError):
    """The tracking store cannot be reached: said before any training starts."""


class TrackingLost(TrackingUnavailable):
    """The tracking server went away during the run; says where the run's results are."""


class ParentRunMissing(DigitsError):
    """A sweep's job was given a parent run that its tracking store does not have."""


class TrainingDiverged(DigitsError, RuntimeError):
    """The loss became NaN or infinite: nothing more can be learnt from this run."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or `kill` stopping the run), raised like Ctrl-C so that the run
    ends KILLED with its checkpoint and curves so far logged."""


class JobLost(DigitsError):
    """A sweep's job ended without a result: the worker running it died (killed, out of
    memory, its node gone)."""


class ResumeError(DigitsError):
    """trainer.resume names a run that cannot be continued with this config."""


class TrackingDenied(TrackingUnavailable):
    """The tracking server answers but refuses these credentials (or has none)."""


class StackError(DigitsError):
    """The local team stack (`digits stack`) cannot be started, reached or stopped."""


class EnsembleError(DigitsError):
    """An ensemble that cannot be made from the runs asked for (`digits ensemble`)."""
