"""Hydra overrides for a child process with their secrets moved into its environment.

A child's argv is readable by every user through ``ps``: :func:`overrides_without_secrets`
replaces each secret in it by an ``oc.env`` interpolation and hands the value over in the
child's environment instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from resomap.redact import parse_override, redact_override, redact_text

# Prefix of the environment variables that carry secret overrides to a child run.
SECRET_ENV_PREFIX = "RESOMAP_SECRET_"


class SecretOverrideError(ValueError):
    """An override holds a secret in a value that cannot be passed through the environment."""


def _env_name(key: str, taken: Mapping[str, str]) -> str:
    base = SECRET_ENV_PREFIX + (re.sub(r"[^A-Z0-9]+", "_", key.upper()).strip("_") or "VALUE")
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    return name


def overrides_without_secrets(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """Hydra overrides fit for a command line, and the environment that gives them their values.

    An override holding a secret (``key=http://user:TOKEN@host``) becomes
    ``key=${oc.env:RESOMAP_SECRET_KEY}``, its value moved into that environment variable, so the
    child's config is the same while its argv (world-readable through ``ps``) holds no secret.
    A dict or list value (``+extra={api_token:x}``) travels as its override text and is read back
    with ``oc.decode``. Raises :class:`SecretOverrideError` for a secret in a sweep.
    """
    from hydra.core.override_parser.types import QuotedString

    kept: list[str] = []
    env: dict[str, str] = {}
    for override in overrides:
        if redact_override(override) == override:
            kept.append(override)
            continue
        parsed = parse_override(override)
        if parsed is None:
            raise SecretOverrideError(f"The override {redact_text(override)} holds a secret and is not "
                                      "a valid Hydra override.")
        raw = parsed._value
        key = parsed.get_key_element()
        name = _env_name(parsed.key_or_group, env)
        if isinstance(raw, (str, QuotedString)):
            env[name] = parsed.value()
            kept.append(f"{key}=${{oc.env:{name}}}")
        elif isinstance(raw, (bool, int, float, list, dict)):
            env[name] = str(raw) if not isinstance(raw, (list, dict)) else parsed.get_value_string()
            # Quoted: Hydra's override grammar reads a nested interpolation only inside quotes.
            kept.append(f"{key}='${{oc.decode:${{oc.env:{name}}}}}'")
        else:
            raise SecretOverrideError(
                f"The override {redact_text(override)} holds a secret inside a "
                f"{type(raw).__name__}, which cannot be passed to a child process without showing it "
                "in its command line. Put the secret in an environment variable and refer to it in the "
                "override, e.g. key=${oc.env:MY_TOKEN}.")
    return kept, env
