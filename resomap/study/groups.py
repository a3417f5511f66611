"""Configurations: runs of one model that differ in training keys other than resolution and seed.

A results folder may hold a sweep over another key too (``optimizer.lr=0.001,0.01``). Its runs
are different experiments: the study answers the resolution question once per configuration.
For each model, the training configs of its runs (``record.identity.training``, flattened to
dotted keys with :func:`resomap.config.flatten`) are compared:

- a key whose values differ between runs *at the same resolution* is a configuration key: runs
  are grouped by their values of all such keys, and every table names them;
- a key that differs only *between* resolutions (e.g. a batch size set per resolution) is
  linked to resolution: the comparison of resolutions includes its effect, and a warning says so;
- keys whose value is the run's resolution or seed in every run, or whose name ends in
  ``seed``, are the resolution and seed themselves and are ignored.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from resomap.config import flatten


@dataclass
class Configurations:
    """Per run (in the order given) its configuration label, and per model the keys found."""

    labels: list[str]
    keys: dict[str, list[str]] = field(default_factory=dict)  # model -> configuration keys
    linked: dict[str, list[str]] = field(default_factory=dict)  # model -> keys linked to resolution
    values: list[dict[str, Any]] = field(default_factory=list)  # per run: its configuration values
    warnings: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _is_own(key: str, values: Sequence[Any], records: Sequence[Any]) -> bool:
    """The key is the run's resolution or seed under another name."""
    if key.rsplit(".", 1)[-1].endswith("seed"):
        return True
    return (all(v == r.resolution for v, r in zip(values, records))
            or all(v == r.seed for v, r in zip(values, records)))


def label(model: str, values: dict[str, Any]) -> str:
    """``model`` alone, or ``model [key=value, ...]`` for a configuration."""
    if not values:
        return model
    return f"{model} [{', '.join(f'{key}={value}' for key, value in sorted(values.items()))}]"


def configurations(records: Sequence[Any]) -> Configurations:
    """Group ``records`` (RunRecords) into configurations per model; see the module docstring."""
    flats = [flatten(record.identity.training or {}) for record in records]
    by_model: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_model[record.model].append(index)
    found = Configurations([record.model for record in records], values=[{} for _ in records])
    for model, members in by_model.items():
        keys = sorted({key for i in members for key in flats[i]})
        config_keys, linked = [], []
        for key in keys:
            values = [flats[i].get(key) for i in members]
            if len({_text(v) for v in values}) < 2 or _is_own(key, values, [records[i] for i in members]):
                continue
            at_resolution: dict[int, set[str]] = defaultdict(set)
            for i, value in zip(members, values):
                at_resolution[records[i].resolution].add(_text(value))
            (config_keys if any(len(seen) > 1 for seen in at_resolution.values()) else linked).append(key)
        if config_keys:
            found.keys[model] = config_keys
            for i in members:
                found.values[i] = {key: flats[i].get(key) for key in config_keys}
                found.labels[i] = label(model, found.values[i])
            count = len({found.labels[i] for i in members})
            found.warnings.append(
                f"{model}: its runs differ in {', '.join(config_keys)} besides resolution and seed; the "
                f"study answers once per configuration ({count} configurations).")
        if linked:
            found.linked[model] = linked
            found.warnings.append(
                f"{model}: its runs differ between resolutions in {', '.join(linked)}; every comparison of "
                "its resolutions includes the effect of these settings too.")
    return found
