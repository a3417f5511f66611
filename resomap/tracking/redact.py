"""The one place secrets are removed from what ResoMap writes, logs, prints or passes to a child.

Secrets are found by parsing, not by guessing where a value ends:

- a Hydra override (``key=value``, ``+x={a:{api_token:..}}``, ``+x.api_token=[a,b]``) is read
  with Hydra's own ``OverridesParser`` and redacted by key path: the whole value of a secret key,
  and inside dict and list values every entry under a secret key, at any depth;
- a URI is split with :mod:`urllib.parse`: its user info (``https://user:p'!$(w@host``, any
  character a URI allows there) and its credential query values (``?token=``, ``sig=``) go;
- a key is a secret when one of its words, after normalising case, separators and plurals, is
  in :data:`SECRET_WORDS` (``password(s)``, ``passwd``, ``pass``, ``pwd``, ``secret(s)``,
  ``token(s)``, ``auth``, ``credential(s)``...), or is ``key`` after a qualifier such as ``api``,
  ``private`` or ``access`` (``api_key``, ``apiKey``, ``AWS_SECRET_ACCESS_KEY``). ``key_dim``,
  ``max_tokens`` and ``tokenizer`` are not secrets;
- the value (6 characters or more) of every environment variable named like a secret
  (``MLFLOW_TRACKING_PASSWORD``, ``DB_PASS``, ``MYSQL_PWD``...) is masked wherever it appears;
- free text (a log line, a traceback, Hydra's own error messages) is read as words: each word
  that parses as an override is redacted as one, then ``name=value`` / ``name: value`` pairs
  under a secret name (quoted, bracketed or plain values) and ``Bearer`` headers.

Each secret is replaced by ``***``. :func:`redact_config` is applied to the config before it
reaches MLflow, the Hydra output folder and (by the run record's writer) result files and
checkpoints; :func:`install_log_redaction` covers every log record of the process,
:func:`install_stream_redaction` everything printed on stdout and stderr (called first thing by
the command line, before Hydra parses an argument); :func:`overrides_without_secrets` moves
secrets from a child process's argv (readable by every user through ``ps``) into its environment.
Redaction is for display and storage only: a run's identity is computed from the config as
given, never from its redacted copy.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from resomap.io import atomic_write_text

MASK = "***"
MIN_SECRET_LENGTH = 6
# Words that make a key or variable name a secret (lower case, singular).
SECRET_WORDS = frozenset({
    "password", "passwd", "pass", "pwd", "passphrase", "passcode", "secret", "token", "auth",
    "authorization", "credential", "cred", "apikey", "privatekey", "accesskey", "secretkey",
    "signature", "sig", "bearer", "cookie", "sessionid", "pat", "otp", "dsn"})
# ``key`` is a secret only after one of these words (``api_key``, ``private-key``, ``sshKey``).
KEY_QUALIFIERS = frozenset({"api", "private", "access", "secret", "ssh", "signing", "encryption",
                            "master", "account", "storage", "license", "client", "shared", "service",
                            "deploy", "session", "auth", "app"})
# Names written as one word that end in a secret word (``dbpassword``, ``authtoken``).
SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey", "privatekey",
                   "accesskey", "secretkey", "credential")
# ``max_tokens``, ``num_tokens``, ``token_length``: counts of tokens, not tokens.
COUNT_WORDS = frozenset({"max", "min", "num", "n", "count", "total", "number", "len", "length", "size",
                         "dim", "limit", "per"})
# Environment variables named like a secret that are not (``PWD`` is the working directory).
NOT_SECRET_VARIABLES = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "XAUTHORITY", "GPG_AGENT_INFO"})
# Kept for callers of the earlier API: the upper-case words of secret environment variable names.
SECRET_ENV_WORDS = tuple(sorted(word.upper() for word in SECRET_WORDS))
# Prefix of the environment variables that carry secret overrides to a child run.
SECRET_ENV_PREFIX = "RESOMAP_SECRET_"
# Files Hydra writes into ``<output_dir>/<output_subdir>`` before the job runs, and at the sweep root.
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
MULTIRUN_FILE = "multirun.yaml"

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# A cheap first look: text without any of these holds no secret name (case-insensitive).
_STEMS = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig|bearer|cookie|session|pat|otp|dsn",
                    re.IGNORECASE)
# Where a URI starts: scheme://, or Hydra's escaped scheme\://.
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*)(\\?://)")
# Characters a URI may hold (RFC 3986: unreserved, reserved, '%'), and '\' of Hydra's escapes.
_URI_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                       "-._~:/?#[]@!$&'()*+,;=%\\")
# A name, then '=' or ':' (with Hydra's escape), in free text.
_PAIR = re.compile(r"([A-Za-z_][\w.\-]*)(['\"]?)(\s*\\?[=:]\s*)")
_BEARER = re.compile(r"\b(Bearer|Authorization:\s*(?:Basic|Token))\s+[A-Za-z0-9._~+/=\-]{8,}")
_CLOSING = {"{": "}", "[": "]", "(": ")"}
_AUTH_SCHEMES = frozenset({"Basic", "Bearer", "Token", "Digest"})  # their value is masked by _BEARER


# ----------------------------------------------------------------------------------------------
# Names


def name_words(name: str) -> list[str]:
    """The words of a key or variable name, lower case: ``apiKey`` -> ``api key``,
    ``MYSQL_PWD`` -> ``mysql pwd``, ``X-Amz-Signature`` -> ``x amz signature``."""
    return [word.lower() for word in _WORDS.findall(str(name))]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


@functools.lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a config key, query parameter or variable ``name`` names a secret."""
    words = [_singular(word) for word in name_words(name)]
    found = []
    for index, word in enumerate(words):
        if word in SECRET_WORDS or word.endswith(SECRET_SUFFIXES):
            found.append(word)
        elif word == "key" and index and words[index - 1] in KEY_QUALIFIERS:
            found.append("key")
    if not found:
        return False
    # ``max_tokens``: a count of tokens, not a token.
    return not (set(found) == {"token"} and COUNT_WORDS.intersection(words))


def is_secret_env_name(name: str) -> bool:
    """Whether environment variable ``name`` holds a secret (``DAGSHUB_TOKEN``, ``DB_PASS``...)."""
    return name.upper() not in NOT_SECRET_VARIABLES and is_secret_key(name)


def secret_env_values() -> list[str]:
    """Values of the secret environment variables set now, longest first (6 characters or more)."""
    values = {value for name, value in os.environ.items()
              if len(value) >= MIN_SECRET_LENGTH and is_secret_env_name(name)}
    return sorted(values, key=len, reverse=True)


def _is_placeholder(value: str) -> bool:
    """An interpolation (``${oc.env:X}``), a placeholder (``<token>``) or a mask: not a secret."""
    return value.startswith(("${", "<", MASK)) or value in ("", "???", "null", "None", "~")


# ----------------------------------------------------------------------------------------------
# URIs


def _uri_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] in _URI_CHARS:
        end += 1
    return end


def _redact_query(query: str) -> str:
    parts = []
    for part in re.split(r"([&;])", query):
        name, equals, value = part.partition("=")
        parts.append(f"{name}={MASK}" if equals and value and is_secret_key(name) else part)
    return "".join(parts)


def _redact_one_uri(scheme: str, separator: str, rest: str) -> str:
    """``rest`` (what follows ``scheme://``) without user info and credential query values.

    The authority ends at the first ``/``, ``?`` or ``#`` (none of which a URI allows unencoded
    in user info), and user info at the authority's last ``@``: exactly how ``urlsplit`` reads it.
    """
    parts = urlsplit(f"{scheme}://{rest.replace(chr(92), '')}")
    cut = min([index for index in (rest.find(mark) for mark in "/?#") if index >= 0], default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in parts.netloc or "@" in authority:
        authority = f"{MASK}@{authority.rpartition('@')[2]}"
    if parts.query:
        path, mark, query = tail.partition("?")
        query, hash_mark, fragment = query.partition("#")
        tail = f"{path}{mark}{_redact_query(query)}{hash_mark}{fragment}"
    return f"{scheme}{separator}{authority}{tail}"


def redact_uri(text: str) -> str:
    """``text`` with the user info and credential query values of every URI in it masked."""
    if "://" not in text:
        return text
    out, position = [], 0
    for match in _SCHEME.finditer(text):
        if match.start() < position:
            continue
        end = _uri_end(text, match.end())
        out.append(text[position:match.start()])
        out.append(_redact_one_uri(match.group(1), match.group(2), text[match.end():end]))
        position = end
    out.append(text[position:])
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Hydra overrides


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse_override(text: str) -> Any | None:
    """``text`` parsed by Hydra's own override parser, or None when it is not an override."""
    from hydra.errors import HydraException

    if "=" not in text and not text.startswith("~"):
        return None
    try:
        return _parser().parse_override(text)
    except (HydraException, ValueError, TypeError, AssertionError, RecursionError):
        return None


def _redact_element(value: Any) -> Any:
    """A parsed override value (str, QuotedString, list, dict, number) with its secrets masked."""
    from hydra.core.override_parser.types import QuotedString

    if isinstance(value, dict):
        return {key: (MASK if is_secret_key(str(key)) and not _holds_nothing(item) else _redact_element(item))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_element(item) for item in value]
    if isinstance(value, QuotedString):
        return QuotedString(text=redact_text(value.text), quote=value.quote)
    if isinstance(value, str):
        return redact_text(value)
    return value


def _holds_nothing(value: Any) -> bool:
    """Nothing to hide: None, empty, an interpolation or placeholder, or the config of an object
    (a node with ``_target_``, such as the ``redact_secrets`` callback), whose keys are redacted
    one by one instead."""
    from hydra.core.override_parser.types import QuotedString

    text = value.text if isinstance(value, QuotedString) else value
    return (value is None or (isinstance(text, str) and _is_placeholder(text))
            or (isinstance(value, Mapping) and "_target_" in value))


def redact_override(override: str) -> str:
    """One Hydra override with its secrets masked by key path, unchanged when it holds none.

    ``+db.password=x`` -> ``+db.password=***``; ``+extra={api_token:x,n:1}`` ->
    ``+extra={api_token:***,n:1}``; ``+x.api_token=[a,b]`` -> ``+x.api_token=***``; a URI value
    loses its user info. Text that is not an override goes through :func:`redact_text`.
    """
    from hydra.core.override_parser.types import ChoiceSweep, Override, QuotedString

    parsed = parse_override(override)
    if parsed is None:
        return redact_text(override)
    value = parsed._value  # the parsed value with its quotes: what the override re-serialises
    key = parsed.get_key_element()
    if value is None:
        return override
    if any(is_secret_key(part) for part in re.split(r"[./@]", parsed.key_or_group)):
        return override if _holds_nothing(value) else f"{key}={MASK}"
    if isinstance(value, ChoiceSweep):
        items = [_redact_element(item) for item in value.list]
        if items == list(value.list):
            return override
        return f"{key}={','.join(Override._get_value_element_as_str(item) for item in items)}"
    if isinstance(value, (str, QuotedString)):
        # A single value keeps the form it was written in (quotes, Hydra's escapes).
        written = parsed.get_value_string()
        masked = redact_text(written)
        return override if masked == written else override[:len(override) - len(written)] + masked
    if not isinstance(value, (int, float, bool, list, dict)):
        return override  # range, interval and glob sweeps: numbers and config names
    redacted = _redact_element(value)
    if redacted == value:
        return override
    return f"{key}={Override._get_value_element_as_str(redacted)}"


def _redact_words(text: str) -> str:
    """Each whitespace-separated word of ``text`` (or a run of them, for quoted values with
    blanks) that parses as a Hydra override, redacted as one."""
    pieces = re.split(r"(\s+)", text)
    index = 0
    while index < len(pieces):
        word = pieces[index]
        if "=" in word and _STEMS.search(text):
            # A quoted value may hold blanks: try the word alone, then with the next words.
            for stop in range(index + 1, min(index + 16, len(pieces) + 1), 2):
                candidate = "".join(pieces[index:stop])
                if "\n" in candidate:
                    break
                escaped_blank = (len(candidate) - len(candidate.rstrip("\\"))) % 2 == 1
                if not escaped_blank and parse_override(candidate) is not None:
                    redacted = redact_override(candidate)
                    if redacted != candidate:
                        pieces[index:stop] = [redacted]
                    break
        index += 2
    return "".join(pieces)


def _value_end(text: str, start: int) -> int:
    """Where a value that starts at ``start`` ends: a quoted string, a bracketed group, or a
    plain run up to a blank."""
    if start >= len(text):
        return start
    first = text[start]
    if first in "'\"":
        index = start + 1
        while index < len(text):
            if text[index] == "\\":
                index += 2
                continue
            if text[index] == first:
                return index + 1
            index += 1
        return len(text)
    if first in _CLOSING:
        depth, index, quote = 0, start, None
        while index < len(text):
            char = text[index]
            if quote:
                if char == "\\":
                    index += 1
                elif char == quote:
                    quote = None
            elif char in "'\"":
                quote = char
            elif char in _CLOSING:
                depth += 1
            elif char in _CLOSING.values():
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
        return len(text)
    # A plain value runs to the next blank: a password may hold any of ,;&)}]' (masking a
    # little more than the value is the safe way to be wrong).
    index = start
    while index < len(text) and not text[index].isspace():
        index += 2 if text[index] == "\\" else 1
    return min(index, len(text))


def _redact_pairs(text: str) -> str:
    """``name=value`` and ``name: value`` (YAML, JSON, a dict's repr) under a secret name."""
    out, position = [], 0
    for match in _PAIR.finditer(text):
        if match.start() < position or not is_secret_key(match.group(1)):
            continue
        start = match.end()
        end = _value_end(text, start)
        value = text[start:end].strip("'\"")
        if end == start or _is_placeholder(value) or value in _AUTH_SCHEMES:
            continue
        out.append(text[position:start])
        out.append(MASK)
        position = end
    out.append(text[position:])
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# Text and configs


def redact_text(text: str) -> str:
    """``text`` with every secret listed in this module's docstring replaced by ``***``."""
    if not text or not isinstance(text, str):
        return text
    if _STEMS.search(text) or "://" in text:
        if "=" in text:
            text = _redact_words(text)
        text = redact_uri(text)
        text = _BEARER.sub(rf"\1 {MASK}", text)
        text = _redact_pairs(text)
    for value in secret_env_values():
        text = text.replace(value, MASK)
    return text


def redact_config(value: Any) -> Any:
    """A redacted deep copy of ``value`` (dicts, lists, strings; an OmegaConf config is resolved first).

    Values of keys named like a secret become ``***`` (None, empty values and interpolations
    stay, they hold nothing); every other key and value is kept as it is, strings go through
    :func:`redact_text`. Keys are never renamed.
    """
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {key: (MASK if is_secret_key(str(key)) and not _holds_nothing(item) else redact_config(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(item) for item in value]
    if isinstance(value, str):
        return redact_override(value) if "=" in value and "\n" not in value else redact_text(value)
    return value


# ----------------------------------------------------------------------------------------------
# Log records and console streams


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


# ----------------------------------------------------------------------------------------------
# Hydra: the files it writes, and the overrides a child process receives


def redact_yaml_file(path: str | os.PathLike) -> bool:
    """Rewrite a YAML file Hydra wrote with its secrets redacted (interpolations kept as written).

    Returns whether the file changed. The rewrite is atomic.
    """
    path = Path(path)
    if not path.is_file() or path.is_symlink():
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
    """Hydra callback: log and console redaction from the start, and redacted copies of Hydra's
    own files.

    Hydra 1.3 writes ``.hydra/{config,hydra,overrides}.yaml`` in ``run_job`` before it calls
    ``on_job_start``, and the sweeper writes ``multirun.yaml`` after ``on_multirun_start``; so the
    files are rewritten in ``on_job_start`` (before the task runs), again in ``on_job_end``, and
    ``multirun.yaml`` once more in ``on_multirun_end``. A launcher's worker process (joblib)
    installs the redaction here, since it never runs the command line's entry point.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_stream_redaction()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_stream_redaction()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_stream_redaction()
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
