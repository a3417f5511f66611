"""Accuracy at equal training cost: each run's validation curve against its cumulative cost,
and which resolution reaches the most within a few training budgets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from resomap.study.cost_figures import number
from resomap.study.runs import RunData

# Training MACs per image = this x forward MACs (forward + backward, the usual approximation).
TRAIN_MACS_PER_FORWARD = 3


@dataclass(frozen=True)
class Curve:
    """One run's validation metric after each epoch against its cumulative training cost."""

    model: str
    resolution: int
    seed: int
    metric: str  # the history key used, e.g. val_balanced_accuracy
    values: tuple[float, ...]
    seconds: tuple[float, ...]  # cumulative training wall time (s)
    macs: tuple[float, ...] | None  # cumulative training multiply-adds (3 x forward MACs x images)


def curve(run: RunData, metric: str) -> Curve | None:
    """The run's curve from its history (None when the history lacks the metric or the time)."""
    record = run.record
    key = f"val_{metric}"
    if not any(key in row for row in record.history):
        key = "val_balanced_accuracy"
    rows = [row for row in record.history
            if number(row.get(key)) is not None and number(row.get("train_time_sec")) is not None]
    if not rows:
        return None
    macs_per_image = number((record.complexity or {}).get("macs"))
    macs = None
    if macs_per_image and all(number(row.get("train_images")) is not None for row in rows):
        per_epoch = [TRAIN_MACS_PER_FORWARD * macs_per_image * row["train_images"] for row in rows]
        macs = tuple(np.cumsum(per_epoch))
    return Curve(run.model, record.resolution, record.seed, key,
                 tuple(float(row[key]) for row in rows), tuple(float(row["train_time_sec"]) for row in rows),
                 tuple(map(float, macs)) if macs is not None else None)


def _reached(curve_: Curve, axis: str, budget: float) -> float | None:
    """Best validation value reached within ``budget`` (the best checkpoint so far), if any epoch fits."""
    costs = curve_.macs if axis == "macs" else curve_.seconds
    values = [v for v, cost in zip(curve_.values, costs) if cost <= budget * (1 + 1e-9)]
    return max(values) if values else None


@dataclass(frozen=True)
class Budget:
    """At one training budget (the full schedule of ``reference`` px), each resolution's best
    validation value reached, averaged over seeds, on one cost axis (``macs`` or ``seconds``)."""

    model: str
    reference: int
    axis: str
    budget: float
    reached: dict[int, float | None]

    @property
    def best(self) -> int | None:
        found = {res: value for res, value in self.reached.items() if value is not None}
        return max(found, key=lambda res: (found[res], -res)) if found else None


def budget_references(resolutions: Sequence[int]) -> list[int]:
    """The resolutions whose full schedules set the budgets: the smallest, the middle, the largest."""
    ordered = sorted(set(resolutions))
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]}) if ordered else []


def budgets(curves: list[Curve]) -> list[Budget]:
    """At the full-schedule cost of a few resolutions (:func:`budget_references`), on each cost
    axis, the best validation value each resolution reached and which resolution is best."""
    found = []
    for axis in ("macs", "seconds"):
        usable = [c for c in curves if (c.macs if axis == "macs" else c.seconds)]
        by_res: dict[int, list[Curve]] = defaultdict(list)
        for item in usable:
            by_res[item.resolution].append(item)
        if len(by_res) < 2:
            continue
        for reference in budget_references(list(by_res)):
            total = float(np.mean([(c.macs if axis == "macs" else c.seconds)[-1]
                                   for c in by_res[reference]]))
            reached = {}
            for res, items in sorted(by_res.items()):
                values = [v for c in items if (v := _reached(c, axis, total)) is not None]
                reached[res] = float(np.mean(values)) if len(values) == len(items) else None
            found.append(Budget(usable[0].model, reference, axis, total, reached))
    return found

