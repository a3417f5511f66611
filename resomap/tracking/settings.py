"""What tracking needs to know of a run or a sweep, as plain frozen values.

The orchestrator (:mod:`resomap.orchestrate`) and the sweep callback (:mod:`resomap.sweep`)
build one :class:`TrackingSettings` from the composed config; tracking never sees the config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def is_store_node(node: Any) -> bool:
    """Whether a logger node (its ``_target_``) is an MLflow store: MLflow's or DagsHub's logger."""
    target = str(node.get("_target_", ""))
    return "mlflow" in target.lower() or "dagshub" in target


@dataclasses.dataclass(frozen=True)
class TrackingSettings:
    """The MLflow stores and folders of a run, and what its MLflow run holds.

    ``stores``: the MLflow and DagsHub logger nodes (resolved plain dicts, Hydra targets), one per
    store. ``checkpoint_dir`` holds each identity's ``mlflow_run.json``; ``results_dir`` its record.
    ``params``: the run's few searchable MLflow params; ``config``: its resolved config with
    secrets redacted, logged as one YAML artifact. Both are empty for a sweep.
    """

    stores: tuple[dict[str, Any], ...]
    checkpoint_dir: Path
    results_dir: Path
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
