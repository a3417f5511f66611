"""Which runs an adaptive study adds at each look, and what a look is projected to cost.

An adaptive study runs the grid once, then looks at its runs repeatedly: at each look every
configuration (a model, with any other swept keys) either is decided (no comparison with its
best resolution is undecided), or gets one more seed at the resolutions that can still change
its answer: the best resolution and every resolution whose comparison with the best is
undecided. A decision needs a seed variance, so the first look gives every resolution
``min_seeds`` seeds without deciding anything. No resolution gets
more than ``max_seeds`` seeds, and a look whose projected cost (from the recorded times of the
runs it repeats) exceeds what is left of the budget is not started.

Everything here is a pure function of the runs' seeds, the decisions and the recorded times,
so a study re-run after a kill makes the same choices (docs/report.md, "The adaptive study").
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from resomap.errors import ResoMapError


class Verdict(Protocol):
    status: str


class Decision(Protocol):
    """What :func:`resomap.study.decide.decide` answers (the parts this module reads)."""

    best: int | None
    recommended: int | None
    decided: bool
    verdicts: Mapping[int, Verdict]


@dataclass(frozen=True)
class StudySettings:
    """``study.*`` of conf/study/adaptive.yaml."""

    min_seeds: int = 2
    max_seeds: int = 5
    budget_minutes: float | None = None

    @property
    def looks(self) -> int:
        """Looks that decide: one at each number of seeds from ``min_seeds`` to ``max_seeds``."""
        return looks(self.min_seeds, self.max_seeds)


def looks(min_seeds: int, max_seeds: int) -> int:
    """The most looks that decide something: ``max_seeds - min_seeds + 1``."""
    return int(max_seeds) - int(min_seeds) + 1


def check_study(min_seeds: Any = 2, max_seeds: Any = 5, budget_minutes: Any = None,
                report_looks: Any = None) -> StudySettings:
    """Validated settings; a :class:`ResoMapError` names the bad key and what is valid."""

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(min_seeds) or min_seeds < 2:
        raise ResoMapError(f"study.min_seeds={min_seeds!r} is not valid: an integer of at least 2 (a "
                           "decision needs the variance between seeds: every resolution gets two or more).")
    if not integer(max_seeds) or max_seeds < min_seeds:
        raise ResoMapError(f"study.max_seeds={max_seeds!r} is not valid: an integer of at least "
                           f"study.min_seeds ({min_seeds}), the most seeds any resolution gets, e.g. 5.")
    if budget_minutes is not None and (isinstance(budget_minutes, bool)
                                       or not isinstance(budget_minutes, (int, float))
                                       or not math.isfinite(budget_minutes) or budget_minutes <= 0):
        raise ResoMapError(f"study.budget_minutes={budget_minutes!r} is not valid: a positive number of "
                           "minutes of recorded run time for the whole study, or null for no budget.")
    needed = looks(min_seeds, max_seeds)
    if report_looks is not None and (not integer(report_looks) or report_looks < needed):
        raise ResoMapError(f"report.looks={report_looks!r} is too small for this study: with "
                           f"study.min_seeds={min_seeds} and study.max_seeds={max_seeds} it may decide at "
                           f"{needed} looks, and each test's alpha must be split over all of them. Leave "
                           f"report.looks to conf/study/adaptive.yaml or set report.looks={needed}.")
    return StudySettings(int(min_seeds), int(max_seeds),
                         None if budget_minutes is None else float(budget_minutes))


def seed_sequence(base: Collection[int], count: int) -> list[int]:
    """The first ``count`` seeds of a configuration: the grid's own seeds, then the integers after
    the largest of them (0, 1, 2... for a grid run with the default seed)."""
    seeds = sorted(set(base))
    following = (seeds[-1] + 1) if seeds else 0
    while len(seeds) < count:
        seeds.append(following)
        following += 1
    return seeds[:count]


@dataclass(frozen=True)
class Extension:
    """What one configuration gets at one look: seeds to add per resolution, and why."""

    additions: dict[int, list[int]] = field(default_factory=dict)
    reason: str = ""
    done: bool = False  # nothing more will ever be added (decided, max_seeds, nothing undecided)

    @property
    def runs(self) -> int:
        return sum(len(seeds) for seeds in self.additions.values())


def _level(seeds: Mapping[int, Collection[int]], targets: Sequence[int], base: Collection[int],
           count: int) -> dict[int, list[int]]:
    wanted = seed_sequence(base, count)
    found = {res: [seed for seed in wanted if seed not in set(seeds.get(res, ()))] for res in targets}
    return {res: added for res, added in found.items() if added}


def extend(seeds: Mapping[int, Collection[int]], decision: Decision | None, base: Collection[int],
           settings: StudySettings) -> Extension:
    """The seeds to add to one configuration at this look.

    ``seeds``: resolution -> seeds it has (finished runs); ``decision``: this look's decision
    (None when none could be made, e.g. no run has predictions); ``base``: the grid's seeds.
    """
    if not seeds:
        return Extension(reason="no finished run", done=True)
    fewest = min(len(found) for found in seeds.values())
    if fewest < settings.min_seeds:
        count = min(settings.min_seeds, settings.max_seeds)
        additions = _level(seeds, sorted(seeds), base, count)
        return Extension(additions, f"a decision needs a seed variance: every resolution gets {count} seeds")
    if decision is None or decision.best is None:
        return Extension(reason="no decision could be made (no stored predictions)", done=True)
    best = decision.best
    # Any undecided comparison can change the answer, above the recommendation too: with more
    # seeds that resolution may turn out better than the best by more than the margin.
    undecided = sorted(res for res, verdict in decision.verdicts.items()
                       if verdict.status == "undecided" and res != best)
    if not undecided:
        state = "decided" if decision.decided else "nothing that more seeds can decide"
        return Extension(reason=f"{state}: {decision.recommended} px recommended", done=True)
    count = len(seeds.get(best, ())) + 1
    if count > settings.max_seeds:
        return Extension(reason=f"undecided at study.max_seeds={settings.max_seeds} seeds", done=True)
    additions = _level(seeds, [best, *undecided], base, count)
    undecided_text = ", ".join(map(str, undecided))
    return Extension(additions, f"best {best} px and undecided {undecided_text} px get {count} seeds")


def projected_seconds(additions: Mapping[int, Sequence[int]],
                      seconds: Mapping[int, Sequence[float]]) -> float:
    """Projected run time of ``additions``: each added run costs the mean recorded time of the
    configuration's runs at that resolution (of all its runs when none is recorded there)."""
    everything = [value for values in seconds.values() for value in values]
    fallback = sum(everything) / len(everything) if everything else 0.0
    total = 0.0
    for res, added in additions.items():
        known = seconds.get(res) or ()
        total += len(added) * (sum(known) / len(known) if known else fallback)
    return total


def fits_budget(projected_sec: float, spent_sec: float, budget_minutes: float | None) -> bool:
    """Whether a look projected to take ``projected_sec`` may start, ``spent_sec`` already spent."""
    return budget_minutes is None or spent_sec + projected_sec <= budget_minutes * 60
