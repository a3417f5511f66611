"""The base of errors a user can fix, and the one way every command reports them.

A :class:`ResoMapError` ends a command with its message alone on stderr (``error: <message>``)
and exit status 2, like argparse's usage errors; anything else is a bug and keeps its traceback.
``HYDRA_FULL_ERROR=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException

USAGE_EXIT = 2


class ResoMapError(Exception):
    """Bad input (config, data, checkpoint) or a run that cannot succeed as configured.

    The message is one paragraph naming the offending key, value or path and what
    would be valid.
    """


class ConfigError(ResoMapError, ValueError):
    """A config value no run can use; the message names the key, the value and what is valid.
    Also a ``ValueError``, for code that calls the checked constructors directly."""


def user_error(error: BaseException) -> ResoMapError | None:
    """The ResoMapError behind ``error``: itself, or the one Hydra's ``instantiate`` wrapped."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, ResoMapError) else None


def exit_with(error: ResoMapError) -> None:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT)


@contextmanager
def user_errors() -> Iterator[None]:
    """Around an entry point's work: a user error becomes one message and exit status 2."""
    try:
        yield
    except Exception as error:
        found = user_error(error)
        if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        exit_with(found)
