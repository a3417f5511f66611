"""Which seeds of a study pay the once-per-configuration measurements (latency, memory,
complexity, explanations): they depend on the model and resolution, not on the seed.
"""

from __future__ import annotations

from typing import Any

from resomap.errors import ConfigError


def check_seeds(seeds: Any, key: str = "seeds") -> list[int] | None:
    """``seeds`` as a list of ints (None stays None); anything else is refused, naming ``key``."""
    if seeds is None:
        return None
    values = list(seeds) if isinstance(seeds, (list, tuple)) or type(seeds).__name__ == "ListConfig" else None
    if values is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{key}={seeds!r} is not valid: a list of integer seeds whose runs pay this "
                         f"once-per-configuration cost (e.g. {key}=[0]), or null for every seed.")
    return [int(v) for v in values]


def measures_seed(seed: int, seeds: list[int] | None) -> bool:
    """Whether a run of ``seed`` pays the once-per-configuration costs (``seeds`` None: every run)."""
    return seeds is None or int(seed) in seeds
