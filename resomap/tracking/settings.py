"""What tracking needs to know of a run or a sweep, as plain frozen values.

The orchestrator (:mod:`resomap.orchestrate`), the sweep callback (:mod:`resomap.sweep`) and
``resomap explain`` build one :class:`TrackingSettings` from the logger nodes, the folders and a
run's resolved config (the one its record keeps); tracking never sees the composed config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from resomap.redact import redact_config

# MLflow's limit on a param's value (characters).
MAX_VALUE_LENGTH = 500


def loggable(flat: Mapping[str, Any]) -> dict[str, str]:
    """String values with secrets redacted (:func:`redact_config`), lengths bounded."""
    return {key: str(value)[:MAX_VALUE_LENGTH] for key, value in redact_config(dict(flat)).items()}


def store_nodes(loggers: Mapping[str, Any] | None) -> tuple[dict[str, Any], ...]:
    """The MLflow and DagsHub nodes of a ``logger`` config node, resolved to plain dicts."""
    return tuple(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
                 for node in (loggers or {}).values() if is_store_node(node))


def run_params(config: Mapping[str, Any], identity: Any) -> dict[str, str]:
    """A few searchable MLflow params of a run, from its resolved config (as its record keeps it).

    Params are write-once (what decides the trained model, equal in every resumption), named as
    the seed study's runs named them so old and new runs compare side by side. Every other
    setting is in the run's config artifact, not in hundreds of params.
    """
    def select(*keys: str) -> Any:
        node: Any = config
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    optimizer = str(select("optimizer", "_target_") or "")
    return loggable({"model": identity.model, "resolution": identity.resolution, "seed": identity.seed,
                     "data": identity.data_name, "epochs": select("trainer", "max_epochs"),
                     "batch_size": select("data", "batch_size"), "learning_rate": select("optimizer", "lr"),
                     "optimizer": optimizer.rsplit(".", 1)[-1]})


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

    @classmethod
    def of(cls, stores: tuple[dict[str, Any], ...], checkpoint_dir: str | Path, results_dir: str | Path,
           identity: Any = None, config: Mapping[str, Any] | None = None) -> TrackingSettings:
        """A run's settings (``identity`` and its resolved, redacted ``config``) or a sweep's
        (neither): the params and config document are derived only when a store will hold them."""
        run = identity is not None and config is not None and bool(stores)
        return cls(stores=stores, checkpoint_dir=Path(checkpoint_dir), results_dir=Path(results_dir),
                   params=run_params(config, identity) if run else {}, config=dict(config) if run else {})
