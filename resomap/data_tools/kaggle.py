"""Download the seed study's data set from Kaggle with kagglehub (``pip install resomap[kaggle]``).

Everything that can fail without the network is checked before the first request:
credentials, then the kagglehub package, then a short connection probe, so that a machine
without access gets one clear message at once instead of a hanging download.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from urllib.parse import urlparse

from resomap.errors import ResoMapError

log = logging.getLogger(__name__)

SEED_DATASET = "vinline/unified-dataset-for-skin-cancer-classification"
DEFAULT_ENDPOINT = "https://www.kaggle.com"


class KaggleUnavailable(ResoMapError, RuntimeError):
    """The Kaggle route cannot run here; the message says what to set or install."""


def find_credentials(environ: os._Environ[str] | dict[str, str] | None = None) -> str | None:
    """Where kagglehub would find credentials (a short description), or None.

    Mirrors kagglehub 1.0's lookup without importing it: the ``KAGGLE_API_TOKEN`` variable
    (a token or a token file), ``~/.kaggle/access_token``, ``KAGGLE_USERNAME`` with
    ``KAGGLE_KEY``, and ``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``.
    """
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or Path.home())
    if environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        if (home / ".kaggle" / name).is_file():
            return str(home / ".kaggle" / name)
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    config_dir = Path(environ["KAGGLE_CONFIG_DIR"]) if environ.get("KAGGLE_CONFIG_DIR") else home / ".kaggle"
    if (config_dir / "kaggle.json").is_file():
        return str(config_dir / "kaggle.json")
    return None


def _install_hint() -> str:
    if importlib.util.find_spec("kagglehub") is not None:
        return ""
    return " The Kaggle route also needs kagglehub: pip install 'resomap[kaggle]'."


def missing_credentials_message(dataset: str) -> str:
    return (
        f"Cannot download {dataset} from Kaggle: no Kaggle credentials found. Set KAGGLE_API_TOKEN "
        "(an API token from https://www.kaggle.com/settings), or KAGGLE_USERNAME and KAGGLE_KEY, "
        "or put kaggle.json in ~/.kaggle (or $KAGGLE_CONFIG_DIR); a network connection is needed "
        "too." + _install_hint() + " Without network or credentials, download the data set by hand "
        f"from https://www.kaggle.com/datasets/{dataset}, unpack it, and run "
        "`resomap data prepare source=folder input_dir=<unpacked folder> "
        "output_dir=data/skin_cancer`."
    )


def check_reachable(url: str, timeout: float) -> None:
    """Open and close one TCP connection to ``url``'s host within ``timeout`` seconds.

    Name resolution ignores socket timeouts, so the probe runs in a worker thread that
    is abandoned when the time is up.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "www.kaggle.com", parsed.port or 443

    def connect() -> None:
        with socket.create_connection((host, port), timeout=timeout):
            pass

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=timeout)
    except (OSError, FutureTimeout) as error:
        raise KaggleUnavailable(
            f"Cannot reach {host}:{port} within {timeout:g} s ({error!r}); the Kaggle route needs a "
            "network connection. Download the data set by hand where there is one, then use "
            "`resomap data prepare source=folder input_dir=<unpacked folder>`."
        ) from error
    finally:
        pool.shutdown(wait=False)


def download(dataset: str = SEED_DATASET, timeout: float = 10.0) -> Path:
    """The local folder of ``dataset`` (kagglehub's cache), downloading it when needed."""
    if find_credentials() is None:
        raise KaggleUnavailable(missing_credentials_message(dataset))
    if importlib.util.find_spec("kagglehub") is None:
        raise KaggleUnavailable(
            f"Downloading {dataset} needs kagglehub, which is not installed: pip install "
            "'resomap[kaggle]' (or pip install kagglehub)."
        )
    check_reachable(os.environ.get("KAGGLE_API_ENDPOINT", DEFAULT_ENDPOINT), timeout)
    import kagglehub

    log.info("Downloading %s with kagglehub (kept in its cache, ~/.cache/kagglehub by default).", dataset)
    return Path(kagglehub.dataset_download(dataset))
