"""The types of ``conf/train.yaml``'s own keys, as a Hydra structured config.

:class:`TrainSchema` is stored in Hydra's ConfigStore as ``train_schema`` and is the first entry
of ``conf/train.yaml``'s defaults list ("schema as base config", Hydra 1.3's structured config
tutorial): everything composed after it (the groups, train.yaml itself, experiment=, debug=,
the command line) is merged into it, so a value of the wrong type (``res=abc``, ``seed=1.5``,
``skip_completed=maybe``) is refused while Hydra composes, with the key and the value.
:mod:`resomap.config_validation` turns that refusal into the project's one paragraph and keeps
the range checks (positive, a known model, a Lightning precision, ...): the one place saying
what is valid.

What stays untyped, and why: the group nodes (``model``, ``trainer``, ``data``, ``optimizer``,
...) are ``Any``. Their options hold different keys (``data=synthetic`` has a generator,
``data=imagefolder`` does not), and they are open keyword arguments of a network, Lightning's
Trainer or a torch optimizer (``+trainer.max_time=...``, ``+optimizer.amsgrad=true``): a
dataclass listing their keys would refuse those, and typing a few keys of an open node needs a
dataclass subclassing ``Dict``, deprecated since OmegaConf 2.2 (omry/omegaconf#663). So the
types of their few checked keys (``data.batch_size``, ``trainer.max_epochs``, ``optimizer.lr``,
...) are still checked by hand, beside their ranges. ``extras`` is open too (``resomap.extras``
reads it with defaults). The schema is stored open at the top (struct flag off), so a top-level
key it does not name is still added as before: ``explain_app.yaml``'s ``ckpt``, ``+extra=...``.

Registered by :func:`register_schema`, called when :mod:`resomap.config` is imported: every
entry point that composes ``train.yaml`` imports ``resomap`` first.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# The name train.yaml's defaults list gives the schema (no file of conf/ has it).
SCHEMA_NAME = "train_schema"


@dataclass
class OomConfig:
    """``oom``: the smallest batch size a run halves its batch down to on CUDA out of memory."""

    min_batch_size: int = 4


@dataclass
class TrainSchema:
    """The keys of ``conf/train.yaml``, in its composed order (``--cfg job`` prints them so)."""

    # Config groups (see the module docstring: open nodes, their keys checked by hand).
    model: Any = MISSING
    resolution: Any = MISSING
    trainer: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    callbacks: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING
    report: Any = MISSING
    study: Any = MISSING
    # train.yaml's own keys.
    res: int = MISSING
    seed: int = 0
    ckpt_path: str | None = None
    objective: str = "val_balanced_accuracy"
    skip_completed: bool = True
    channels_last: bool = True
    gpu_per_job: bool = False
    evaluate_cross_res: bool = True
    oom: OomConfig = field(default_factory=OomConfig)
    extras: Any = field(default_factory=dict)
    run_name: str = MISSING


def schema_field(key: str) -> tuple[Any, bool]:
    """The type the schema gives the dotted ``key`` (``int`` for ``res``, ``int`` for
    ``oom.min_batch_size``; ``Any`` for a key it leaves open) and whether it may be null."""
    node: Any = TrainSchema
    kind, optional = Any, True
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return Any, True
        hints = typing.get_type_hints(node)
        if part not in hints:
            return Any, True
        kind = node = hints[part]
        arguments = typing.get_args(kind)
        optional = type(None) in arguments
        if optional:
            kind = node = next(argument for argument in arguments if argument is not type(None))
    return kind, optional


def register_schema() -> None:
    """Store :class:`TrainSchema` in Hydra's ConfigStore (again is harmless: it replaces)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # Typed but open at the top: a key the schema does not name is added as before (explain's
    # config adds ``ckpt``; ``+extra=...`` on the command line), while a named key keeps its type.
    # Hydra closes the composed config (struct) afterwards, as without a schema.
    schema = OmegaConf.structured(TrainSchema)
    OmegaConf.set_struct(schema, False)
    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema)
