"""Credentials stay out of everything a run records or prints.

A tracking URI may carry a user and password (http://user:pass@host), and MLflow reads
secrets from the environment (MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN). Params,
tags, config artifacts, log files, console lines and exception tracebacks (in log
records, and whatever Python or Hydra prints of an error) all pass through `redact`.
This module imports nothing heavy: the entry points install it before anything runs.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys

# Hydra prints a sweep's overrides with ':' escaped (http\://user\:pass@...), and in a
# failed job's message as a list's repr (http\\://...): allow any backslashes. A path
# made of a URI loses a slash (pathlib: s3:/user:pw@bucket): one slash is enough.
# MLflow's models:/NAME@ALIAS names a registered model's alias, not a user: left alone
# (a scheme starts a word, so `odels:/` inside it is no scheme either).
_USERINFO = re.compile(
    r"(?<![a-zA-Z0-9+.-])(?P<scheme>(?!models\\*:)[a-zA-Z][a-zA-Z0-9+.-]*\\*:/{1,2})[^/@\s]+@"
)
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
        # log.exception(...) and exc_info=True: the traceback is formatted later, by each
        # handler, from exc_info; formatting it here, masked, is what they will all print.
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    make_record.redacting = True
    logging.setLogRecordFactory(make_record)


_FORMATTER = logging.Formatter()


class RedactingStream(io.TextIOBase):
    """A text stream that masks credentials in what is written to it, line by line.

    Tracebacks reach the console without logging: Python's own (an uncaught exception)
    and Hydra's (a failing job, printed with sys.stderr.write). Lines are held until
    their newline (or a flush) so that a secret is never split between two writes."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, self._pending = self._pending.rsplit("\n", 1)
            self._stream.write(redact(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def wrapped(self):
        return self._stream


def redact_console() -> None:
    """Mask credentials in everything printed to stdout and stderr from now on, tracebacks
    included (idempotent). For the command-line entry points: a library caller's streams
    are theirs."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
