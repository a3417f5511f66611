"""The base of errors a user can fix: the CLI prints their message, not a traceback."""

from __future__ import annotations


class ResoMapError(Exception):
    """Bad input (config, data, checkpoint) or a run that cannot succeed as configured.

    The message is one paragraph naming the offending key, value or path and what
    would be valid; ``resomap.run.sweep.run_job`` prints it as ``error: <message>``.
    """
