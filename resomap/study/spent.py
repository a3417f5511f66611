"""What an answer cost and what more seeds would cost, from the records' own timings.

Time is each run's recorded wall time (``timing.total_sec``: setup, training, test, profiling
and explanations) on the device it ran on; the full grid is every resolution of the model at
``k`` seeds, ``k`` the most seeds any of its resolutions got, each missing run costed at the
mean time of that resolution's recorded runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from resomap.study.verdicts import Decision


@dataclass(frozen=True)
class Spent:
    """One model's (configuration's) runs: what they cost against the full k-seed grid."""

    model: str
    runs: int
    seconds: float  # recorded wall time of the runs that have one
    timed: int  # runs with a recorded time
    seeds: dict[int, int]  # resolution -> seeds run
    k: int
    grid_runs: int
    grid_seconds: float | None  # the full k-seed grid, estimated; None without any timing
    devices: tuple[str, ...]

    @property
    def saved_runs(self) -> int:
        return self.grid_runs - self.runs


def spent(model: str, groups: list) -> Spent:
    """The cost of ``groups`` (one model's :class:`resomap.study.resolution_group.Group` list)."""
    runs = [run for group in groups for run in group.runs]
    seeds = {group.resolution: len(group.runs) for group in groups}
    k = max(seeds.values(), default=0)
    timed = [t for run in runs if (t := (run.record.timing or {}).get("total_sec")) is not None
             and isinstance(t, (int, float))]
    grid: float | None = 0.0
    for group in groups:
        mean = group.seconds()
        if mean is None:
            grid = None
            break
        grid += mean * k
    devices = tuple(sorted({f"{run.record.accelerator or '?'}: {run.record.device or 'unknown'}"
                            for run in runs}))
    return Spent(model, len(runs), float(sum(timed)), len(timed), seeds, k, k * len(groups), grid, devices)


@dataclass(frozen=True)
class MoreSeeds:
    """Runs (and estimated wall time) to reach a number of seeds at some resolutions."""

    resolutions: tuple[int, ...]
    seeds: int
    runs: int
    seconds: float | None


def more_seeds(groups: list, resolutions: list[int], seeds: int) -> MoreSeeds:
    """Bring ``resolutions`` to ``seeds`` seeds each: the runs missing and their estimated time."""
    by_res = {group.resolution: group for group in groups}
    runs, seconds = 0, 0.0
    seconds_known: float | None = seconds
    for res in resolutions:
        group = by_res[res]
        missing = max(0, seeds - len(group.runs))
        runs += missing
        mean = group.seconds()
        seconds_known = None if seconds_known is None or mean is None else seconds_known + missing * mean
    return MoreSeeds(tuple(sorted(resolutions)), seeds, runs, seconds_known)


def next_step(groups: list, decision: Decision | None) -> MoreSeeds | None:
    """What more seeds would cost where the answer is not decided: with one seed per resolution,
    a second seed at every resolution; otherwise the power figure's seeds at the best and at the
    undecided resolutions below the recommended one (None when no seed figure applies)."""
    if decision is None or decision.best is None or decision.decided:
        return None
    if decision.one_run:
        return more_seeds(groups, [g.resolution for g in groups], 2)
    blocking = [v for r, v in decision.verdicts.items()
                if decision.recommended is not None and r < decision.recommended and v.status == "undecided"]
    needed = [v.seeds_for_power for v in blocking if v.seeds_for_power]
    if not needed:
        return None
    return more_seeds(groups, [decision.best, *[v.resolution for v in blocking]], max(needed))


def duration(seconds: float | None) -> str:
    """``1 h 05 min``, ``4.2 min`` or ``35 s``; "unknown" for None."""
    if seconds is None:
        return "unknown (no recorded timing)"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
