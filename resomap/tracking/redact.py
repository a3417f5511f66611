"""The one place secrets are removed from what ResoMap writes, logs or passes to a child process.

What counts as a secret:

- the user info of any URI (``https://user:TOKEN@host`` -> ``https://***@host``);
- query values named like credentials (``?token=``, ``access_token=``, ``sig=``, ``api_key=``...);
- ``name=value`` where the name ends in token, password, secret, credential or api key (the
  form of a Hydra override or a shell assignment);
- the literal value (6 characters or more) of every environment variable whose name contains
  TOKEN, PASSWORD, PASSWD, SECRET, KEY or CREDENTIAL (``MLFLOW_TRACKING_PASSWORD``,
  ``DAGSHUB_TOKEN``...), wherever it appears;
- in a config, the value of any key named like a secret (``api_token``, ``password``...).

Each is replaced by ``***``. :func:`redact_config` is applied to the config before it reaches
MLflow, the Hydra output folder and (by the run record's writer) result files and checkpoints;
:func:`install_log_redaction` covers every log record of the process; :func:`overrides_without_secrets`
moves secrets from a child process's argv (readable by every user through ``ps``) into its
environment.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from resomap.io import atomic_write_text

MASK = "***"
MIN_SECRET_LENGTH = 6
# Environment variables whose value is a secret: the name contains one of these (any case).
SECRET_ENV_WORDS = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "KEY", "CREDENTIAL")
# Config keys are matched by word, so ``exclude_keys``, ``tokenizer`` or ``monkey`` stay visible.
SECRET_KEY_WORDS = frozenset({"key", "token", "password", "passwd", "passphrase", "secret", "credential",
                              "credentials", "apikey", "privatekey", "secretkey", "accesskey"})
SECRET_KEY_SUFFIXES = ("token", "password", "passwd", "secret", "credential", "credentials", "apikey")
# Prefix of the environment variables that carry secret overrides to a child run.
SECRET_ENV_PREFIX = "RESOMAP_SECRET_"
# Files Hydra writes into ``<output_dir>/<output_subdir>`` before the job runs, and at the sweep root.
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
MULTIRUN_FILE = "multirun.yaml"

# scheme://netloc: the netloc ends at the path, query, fragment, whitespace or a quote. Hydra
# escapes ``:`` in the overrides it records (``http\://user\:pw@host``): matched too.
_URI = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*\\?://)([^\s/?#'\"<>]*)")
_SECRET_NAME = r"(?:token|password|passwd|passphrase|secret|signature|sig|api_?key|private_?key|" \
               r"secret_?key|access_?key|key|credentials?|auth)"
# A query parameter whose name ends in a secret word: ?token=, &X-Amz-Signature=, &sig=, ?api_key=.
_QUERY_SECRET = re.compile(rf"([?&;][^=&#\s]*?{_SECRET_NAME}=)([^&#\s'\"]+)", re.IGNORECASE)
# name=value: the name ends in a secret word; the value may be quoted; placeholders (<token>),
# interpolations (${oc.env:X}) and masks are left alone.
_ASSIGNMENT = re.compile(
    r"((?<![\w.\-])[\w.\-]*(?:token|password|passwd|passphrase|secret|api_?key|private_?key|"
    r"secret_?key|access_?key|credentials?)\\?=)(?![<$*])('[^']*'|\"[^\"]*\"|(?:\\.|[^\s'\",;&\\])+)",
    re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer|Authorization:\s*(?:Basic|Token))\s+[A-Za-z0-9._~+/=\-]{8,}")
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def is_secret_env_name(name: str) -> bool:
    """Whether environment variable ``name`` holds a secret (its name contains TOKEN, KEY...)."""
    return any(word in name.upper() for word in SECRET_ENV_WORDS)


def is_secret_key(name: str) -> bool:
    """Whether config key ``name`` names a secret: a word of it is token, password, key... ."""
    words = [word.lower() for word in _WORDS.findall(str(name))]
    return any(word in SECRET_KEY_WORDS or word.endswith(SECRET_KEY_SUFFIXES) for word in words)


def secret_env_values() -> list[str]:
    """Values of the secret environment variables set now, longest first (6 characters or more)."""
    values = {value for name, value in os.environ.items()
              if len(value) >= MIN_SECRET_LENGTH and is_secret_env_name(name)}
    return sorted(values, key=len, reverse=True)


def _mask_userinfo(match: re.Match) -> str:
    scheme, netloc = match.group(1), match.group(2)
    if "@" not in netloc:
        return match.group(0)
    return f"{scheme}{MASK}@{netloc.rsplit('@', 1)[1]}"


def redact_uri(uri: str) -> str:
    """``uri`` with its user info and credential query values replaced by ``***``."""
    return _QUERY_SECRET.sub(rf"\1{MASK}", _URI.sub(_mask_userinfo, uri))


def redact_text(text: str) -> str:
    """``text`` with every secret listed in this module's docstring replaced by ``***``."""
    if not text:
        return text
    text = redact_uri(text)
    text = _ASSIGNMENT.sub(rf"\1{MASK}", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    for value in secret_env_values():
        text = text.replace(value, MASK)
    return text


def redact_config(value: Any) -> Any:
    """A redacted deep copy of ``value`` (dicts, lists, strings; an OmegaConf config is resolved first).

    Values of keys named like a secret become ``***`` (None and empty values stay, they hold
    nothing); every string goes through :func:`redact_text`. Other scalars are returned as they are.
    """
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {key: (MASK if is_secret_key(key) and item not in (None, "") else redact_config(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


# ----------------------------------------------------------------------------------------------
# Log records


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


# ----------------------------------------------------------------------------------------------
# Hydra: the files it writes, and the overrides a child process receives


def redact_yaml_file(path: str | os.PathLike) -> bool:
    """Rewrite a YAML file Hydra wrote with its secrets redacted (interpolations kept as written).

    Returns whether the file changed. The rewrite is atomic.
    """
    path = Path(path)
    if not path.is_file():
        return False
    loaded = OmegaConf.load(path)
    container = OmegaConf.to_container(loaded, resolve=False)
    redacted = redact_config(container)
    if redacted == container:
        return False
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(redacted)))
    return True


def redact_hydra_outputs(config: DictConfig) -> list[Path]:
    """Redact the ``.hydra`` files of this job and the sweep's ``multirun.yaml``; the changed files."""
    hydra = config.hydra
    files = []
    if hydra.get("output_subdir") is not None and OmegaConf.select(config, "hydra.runtime.output_dir"):
        files += [Path(hydra.runtime.output_dir) / hydra.output_subdir / name for name in HYDRA_FILES]
    if hydra.get("mode") == RunMode.MULTIRUN and OmegaConf.select(config, "hydra.sweep.dir"):
        files.append(Path(hydra.sweep.dir) / MULTIRUN_FILE)
    return [path for path in files if redact_yaml_file(path)]


class RedactSecrets(Callback):
    """Hydra callback: log redaction from the start, and redacted copies of Hydra's own files.

    Hydra 1.3 writes ``.hydra/{config,hydra,overrides}.yaml`` in ``run_job`` before it calls
    ``on_job_start``, and the sweeper writes ``multirun.yaml`` after ``on_multirun_start``; so the
    files are rewritten in ``on_job_start`` (before the task runs), again in ``on_job_end``, and
    ``multirun.yaml`` once more in ``on_multirun_end``.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_redaction()
        redact_hydra_outputs(config)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        redact_hydra_outputs(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.hydra.sweep.dir) / MULTIRUN_FILE
        redact_yaml_file(path)


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
    Raises :class:`SecretOverrideError` for a secret inside a list or dict value.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    kept: list[str] = []
    env: dict[str, str] = {}
    for override in overrides:
        if redact_text(override) == override:
            kept.append(override)
            continue
        parsed = parser.parse_override(override)
        value = parsed.value()
        key = parsed.get_key_element()
        name = _env_name(parsed.key_or_group, env)
        if isinstance(value, str):
            env[name] = value
            kept.append(f"{key}=${{oc.env:{name}}}")
        elif isinstance(value, (bool, int, float)):
            env[name] = str(value)
            # Quoted: Hydra's override grammar reads a nested interpolation only inside quotes.
            kept.append(f"{key}='${{oc.decode:${{oc.env:{name}}}}}'")
        else:
            raise SecretOverrideError(
                f"The override {redact_text(override)} holds a secret inside a "
                f"{type(value).__name__}, which cannot be passed to a child process without showing it "
                "in its command line. Put the secret in an environment variable and refer to it in the "
                "override, e.g. key=${oc.env:MY_TOKEN}.")
    return kept, env
