"""The one place secrets are removed from what ResoMap writes, logs or prints: text, URIs,
Hydra overrides and configs.

Secrets are found by parsing, not by guessing where a value ends (which names are secrets:
:mod:`resomap.secret_names`):

- a Hydra override (``key=value``, ``+x={a:{api_token:..}}``, ``+x.api_token=[a,b]``) is read
  with Hydra's own ``OverridesParser`` and redacted by key path: the whole value of a secret key,
  and inside dict and list values every entry under a secret key, at any depth;
- a URI is split with :mod:`urllib.parse`: its user info (``https://user:p'!$(w@host``, any
  character a URI allows there) and its credential query values (``?token=``, ``sig=``) go;
- the value of every environment variable named like a secret is masked wherever it appears;
- free text (a log line, a traceback, Hydra's own error messages) is read as words: each word
  that parses as an override is redacted as one, then ``name=value`` / ``name: value`` pairs
  under a secret name (quoted, bracketed or plain values) and ``Bearer`` headers.

Each secret is replaced by ``***``. :func:`redact_config` is applied to the config before it
reaches MLflow, the Hydra output folder and (by the run record's writer) result files and
checkpoints; :mod:`resomap.redact_logs` applies :func:`redact_text` to every log record and to
stdout and stderr; :mod:`resomap.secret_overrides` moves secrets out of a child process's argv.
Redaction is for display and storage only: a run's identity is computed from the config as
given, never from its redacted copy. A ground-floor module (beside :mod:`resomap.io`): the run's
identity and record use it, so it imports nothing of ResoMap above :mod:`resomap.secret_names`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from omegaconf import OmegaConf

from resomap.secret_names import MASK, is_placeholder, is_secret_key, secret_env_values

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
    return (value is None or (isinstance(text, str) and is_placeholder(text))
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
        if end == start or is_placeholder(value) or value in _AUTH_SCHEMES:
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

