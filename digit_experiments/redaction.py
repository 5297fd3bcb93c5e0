"""Credentials stay out of everything a run records or prints.

A tracking URI may carry a user and password (http://user:pass@host), and MLflow reads
secrets from the environment (MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN). Params,
tags, config artifacts, log files and console lines all pass through `redact`.
"""

from __future__ import annotations

import logging
import os
import re

# Hydra prints a sweep's overrides with ':' escaped (http\://user\:pass@...): allow it.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*\\?://)[^/@\s]+@")
_SECRET_NAMES = re.compile(r"(PASSWORD|TOKEN|SECRET|SECRET_ACCESS_KEY)$")
MASK = "***"


def _secret_values() -> list[str]:
    # Short values would mask ordinary text; real secrets are longer than 3 characters.
    values = {v for k, v in os.environ.items() if _SECRET_NAMES.search(k) and len(v) > 3}
    return sorted(values, key=len, reverse=True)


def redact(value: str) -> str:
    """`value` with URI credentials (scheme://user:password@host -> scheme://***@host) and
    the values of secret environment variables (*PASSWORD, *TOKEN, *SECRET) masked."""
    value = _USERINFO.sub(rf"\g<scheme>{MASK}@", value)
    for secret in _secret_values():
        value = value.replace(secret, MASK)
    return value


def redact_logs() -> None:
    """Mask credentials in every log record from now on (idempotent).

    Done where records are made, not with a handler filter: Hydra reconfigures logging
    (new handlers) when its launcher starts and again for every job, and its launcher
    logs each job's overrides, tracking.uri included."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return record  # a malformed call: leave it to logging to report
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    make_record.redacting = True
    logging.setLogRecordFactory(make_record)
