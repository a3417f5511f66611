"""Hydra's own files, redacted: the ``.hydra/*.yaml`` of each job and the sweep's ``multirun.yaml``.

:class:`RedactSecrets` is the Hydra callback (``conf/hydra/default.yaml``) that installs log
and console redaction in every job and rewrites the files Hydra wrote with their secrets masked
(:func:`resomap.redact.redact_config`); :func:`redact_yaml_file` is also used to upload redacted
copies of YAML artifacts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from resomap.io import atomic_write_text
from resomap.redact import redact_config
from resomap.redact_logs import install_stream_redaction

# Files Hydra writes into ``<output_dir>/<output_subdir>`` before the job runs, and at the sweep root.
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
MULTIRUN_FILE = "multirun.yaml"


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
