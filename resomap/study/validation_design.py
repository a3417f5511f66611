"""How the validation is sized: the :class:`Design` of its simulated studies and reference
(``design.*`` in conf/validate.yaml), and its checks.

Apart from the run (:mod:`resomap.study.validation`) so that the command checks the settings
before anything is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resomap.errors import ResoMapError


@dataclass(frozen=True)
class Design:
    """How many studies, of what size, and the reference (``design.*`` in conf/validate.yaml)."""

    studies: int = 150
    seeds: int = 4  # training runs per resolution in each study
    train_per_class: int = 48
    test_per_class: int = 80
    reference_seeds: int = 64
    reference_per_class: int = 1000
    reference_resamples: int = 200  # bootstrap resamples of the reference's own decision
    group: int = 128  # runs trained at once
    data_seed: int = 0


def check_design(**values: Any) -> Design:
    """A validated :class:`Design`; a :class:`ResoMapError` names the bad key and what is valid."""
    minimum = {"studies": 1, "seeds": 2, "train_per_class": 2, "test_per_class": 2, "reference_seeds": 2,
               "reference_per_class": 2, "reference_resamples": 100, "group": 1, "data_seed": 0}
    for key, value in values.items():
        if key not in minimum:
            raise ResoMapError(f"design.{key} is not a setting of the validation: valid keys are "
                               f"{', '.join(minimum)}.")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum[key]:
            raise ResoMapError(f"design.{key}={value!r} is not valid: an integer of at least {minimum[key]}"
                               + (" (a decision needs two seeds per resolution)." if key == "seeds" else "."))
    return Design(**values)
