"""The cost figures a run record holds (latency, throughput, memory, multiply-adds, parameters).

One owner for which record key each figure is read from, its unit and scale, and which figures
are fitted against resolution; the study's groups, tables and report read them from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from resomap.run.record import RunRecord

# A scaling exponent further than this from 2 (cost proportional to pixel count) is flagged.
EXPONENT_TOLERANCE = 0.5


@dataclass(frozen=True)
class Figure:
    """A cost figure read from a record section; the first key present is used. ``units``:
    the unit of a key whose unit differs from ``unit`` (memory: MiB on the GPU, MB on the CPU)."""

    label: str
    unit: str
    section: str
    keys: tuple[str, ...]
    scale: float = 1.0
    units: tuple[tuple[str, str], ...] = ()

    def unit_of(self, key: str) -> str:
        return dict(self.units).get(key, self.unit)


# Median latency first: the seed's mean was inflated by a first-batch outlier.
FIGURES = {
    "latency": Figure("Latency per batch", "ms", "profiling",
                      ("median_time_sec", "p50_time_sec", "avg_time_sec"), 1000.0),
    "throughput": Figure("Throughput", "images/s", "profiling", ("throughput_samples_sec",)),
    # The model's own memory first (GPU: weights + the passes' peak, data cache excluded, in MiB; CPU:
    # the passes' rise of resident memory, in decimal MB), the whole process's peak only for records
    # without them.
    "memory": Figure("Peak memory", "MB", "profiling",
                     ("gpu_memory_peak_mib", "cpu_memory_increase_mb", "peak_cpu_memory_mb"),
                     units=(("gpu_memory_peak_mib", "MiB"),)),
    # fvcore's count: one multiply-add counts once, so the record's "macs" are multiply-accumulates.
    "macs": Figure("Multiply-adds", "GMACs", "complexity", ("macs",), 1e-9),
    "params": Figure("Parameters", "M", "complexity", ("params_total",), 1e-6),
}
SCALING_FIGURES = ("latency", "memory", "macs")


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, a string...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def figure_value(record: RunRecord, name: str) -> tuple[float, str] | None:
    """The run's value of figure ``name`` (scaled to its unit) and the key it came from."""
    figure = FIGURES[name]
    section = getattr(record, figure.section) or {}
    for key in figure.keys:
        value = number(section.get(key))
        if value is not None and value > 0:
            return value * figure.scale, key
    return None

