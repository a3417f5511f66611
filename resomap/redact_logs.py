"""Redaction of every log record and of everything printed on stdout and stderr.

:func:`install_log_redaction` covers every log record of the process, :func:`install_stream_redaction`
everything printed on stdout and stderr (called first thing by the command line, before Hydra
parses an argument). Both apply :func:`resomap.redact.redact_text`.
"""

from __future__ import annotations

import atexit
import logging
import sys
from typing import Any

from resomap.redact import redact_text


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record's message (arguments merged in), traceback and stack in place."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: logging reports it itself when it formats it
        return record
    redacted = redact_text(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text when it is set, so the traceback is formatted once, redacted.
        record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    return record


class RedactFilter(logging.Filter):
    """A logging filter that redacts each record it sees (for handlers configured elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction() -> None:
    """Redact every log record this process creates, whatever logger or handler it goes to.

    A record factory rather than a filter on the root handlers: Hydra replaces the handlers
    (``logging.config.dictConfig``) when it starts each job, and a filter on a logger does
    not see records of its children; the factory survives both. Idempotent.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "resomap_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(current(*args, **kwargs))

    factory.resomap_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class RedactingStream:
    """A text stream that redacts what is written to it, line by line, before passing it on.

    Text is held until a line ends (``\\n`` or ``\\r``, what progress bars use) or the stream is
    flushed, so a secret that ``print`` writes in pieces (``print("uri", uri)``) is seen whole.
    Everything else (``fileno``, ``isatty``, ``encoding``...) is the wrapped stream's.
    """

    resomap_redacts = True

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
        if cut >= 0:
            ready, self._pending = self._pending[:cut + 1], self._pending[cut + 1:]
            self._stream.write(redact_text(ready))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            ready, self._pending = self._pending, ""
            self._stream.write(redact_text(ready))
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install_stream_redaction() -> None:
    """Redact everything this process prints on stdout and stderr from now on (idempotent).

    Called first thing by the command line, before Hydra parses an argument, so Hydra's own
    errors (a mistyped key echoes its override), tracebacks and progress output are covered
    too. Log redaction is installed with it.
    """
    install_log_redaction()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not getattr(stream, "resomap_redacts", False):
            wrapped = RedactingStream(stream)
            setattr(sys, name, wrapped)
            atexit.register(_flush_quietly, wrapped)


def _flush_quietly(stream: RedactingStream) -> None:
    try:
        stream.flush()
    except (OSError, ValueError):  # the wrapped stream is closed already
        pass

