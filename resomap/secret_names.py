"""What counts as a secret: key and variable names, and the values of secret environment variables.

A key is a secret when one of its words, after normalising case, separators and plurals, is in
:data:`SECRET_WORDS` (``password(s)``, ``passwd``, ``pass``, ``pwd``, ``secret(s)``,
``token(s)``, ``auth``, ``credential(s)``...), or is ``key`` after a qualifier such as ``api``,
``private`` or ``access`` (``api_key``, ``apiKey``, ``AWS_SECRET_ACCESS_KEY``). ``key_dim``,
``max_tokens`` and ``tokenizer`` are not secrets. The value (6 characters or more) of every
environment variable named like a secret (``MLFLOW_TRACKING_PASSWORD``, ``DB_PASS``,
``MYSQL_PWD``...) is a secret wherever it appears. Kept apart from :mod:`resomap.redact` (which
masks what these rules find) so the rules can be read and tested on their own.
"""

from __future__ import annotations

import functools
import os
import re

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

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


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
    return list(_secret_values(tuple(os.environ.items())))


@functools.lru_cache(maxsize=8)
def _secret_values(environment: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    # Cached by the whole environment: redacting one config asks for every string it holds, and
    # judging each variable's name on every call cost about 2 ms a string (a Hydra file: 0.3 s).
    values = {value for name, value in environment
              if len(value) >= MIN_SECRET_LENGTH and is_secret_env_name(name)}
    return tuple(sorted(values, key=len, reverse=True))


def is_placeholder(value: str) -> bool:
    """An interpolation (``${oc.env:X}``), a placeholder (``<token>``) or a mask: not a secret."""
    return value.startswith(("${", "<", MASK)) or value in ("", "???", "null", "None", "~")

