"""The decision in words: the plain statement of :class:`~resomap.study.verdicts.Decision`.

Every direction in the text is read from the decision's numbers; kept apart from the decision
rules (:mod:`resomap.study.decide`) so that changing a sentence never touches a rule.
"""

from __future__ import annotations

from resomap.study.decision_settings import Settings
from resomap.study.verdicts import STATUSES, Decision, Verdict

ONE_RUN = "highest point estimate, one training run: not a decision"


def _list(resolutions: list[int]) -> str:
    return ", ".join(f"{res} px" for res in resolutions)


def _decided_text(decision: Decision, settings: Settings, inferior: list[int]) -> str:
    """Why the recommended resolution is a decision."""
    label, margin = settings.metric_label, f"{settings.margin:g}"
    best, chosen = decision.best, decision.recommended
    value, level = decision.estimates[best], f"{decision.level:.3g}"
    if chosen < best:
        return (f"{chosen} px is the smallest resolution shown non-inferior to the best ({best} px, "
                f"{label} {value:.3f}) within a margin of {margin} (Holm-corrected one-sided test at "
                f"{level}).")
    if chosen == min(decision.estimates):
        return f"{chosen} px, the smallest resolution run, has the highest {label} ({value:.3f})."
    return (f"{chosen} px has the highest {label} ({value:.3f}) and every smaller resolution is "
            f"shown worse than it by more than the margin {margin} (Holm-corrected one-sided test at "
            f"{level}): {_list([r for r in inferior if r < chosen])}.")


def _power_text(verdicts: dict[int, Verdict], blocking: list[int], single: list[int],
                settings: Settings) -> str:
    """What would settle the smallest open comparison with 80 % power, if anything alone would."""
    planned = [verdicts[r] for r in blocking if verdicts[r].seeds_for_power or verdicts[r].images_for_power]
    if planned:
        first = min(planned, key=lambda v: v.resolution)
        parts = []
        if first.seeds_for_power:
            parts.append(f"{first.seeds_for_power} seeds per resolution")
        if first.images_for_power:
            parts.append(f"{first.images_for_power} test images")
        outcome = ("non-inferior" if first.difference.difference > -settings.margin
                   else "worse by more than the margin")
        return (f" With the difference at its estimate ({first.difference.difference:+.3f}), about "
                f"{' or '.join(parts)} would show {first.resolution} px {outcome} with 80 % power.")
    if [r for r in blocking if r not in single]:
        return (" At the estimated differences neither more seeds alone nor more test images alone "
                "would reach 80 % power: both are needed, or a larger margin.")
    return ""


def _undecided_text(decision: Decision, settings: Settings) -> str:
    """Why the answer is not a decision, and what is still open below it."""
    label, verdicts = settings.metric_label, decision.verdicts
    best, chosen = decision.best, decision.recommended
    text = f"Not decided: {best} px has the highest {label} ({decision.estimates[best]:.3f})"
    if chosen < best:
        text += (f"; {chosen} px is the smallest shown non-inferior to it within the margin "
                 f"{settings.margin:g}")
    blocking = sorted(r for r, v in verdicts.items() if r < chosen and v.status != "inferior")
    text += (f". Still open below {chosen} px: {_list(blocking)}." if blocking else ".")
    single = [r for r in blocking
              if verdicts[r].difference is not None and verdicts[r].difference.n_seeds < 2]
    if single:
        text += f" One training run only: {_list(single)}."
    return text + _power_text(verdicts, blocking, single, settings)


def statement(decision: Decision, settings: Settings) -> str:
    """The plain answer, every direction in it read from the decision's numbers."""
    label = settings.metric_label
    best, chosen = decision.best, decision.recommended
    if best is None:
        return f"No {label} can be computed for any resolution: no recommendation."
    value = decision.estimates[best]
    if len(decision.estimates) == 1:
        return (f"Only {best} px was run: nothing to compare it with ({label} {value:.3f}). Run more "
                "resolutions to get a recommendation.")
    if decision.one_run:
        return (f"{best} px: {ONE_RUN}. It has the highest {label} ({value:.3f}) of one training run per "
                "resolution; the seed-to-seed variance, which can exceed the differences between "
                "resolutions, is unknown until more seeds are run.")
    verdicts = decision.verdicts
    by_status = {status: sorted(r for r, v in verdicts.items() if v.status == status) for status in STATUSES}
    if decision.decided:
        text = _decided_text(decision, settings, by_status["inferior"])
    else:
        text = _undecided_text(decision, settings)
    shown_worse = [r for r in by_status["inferior"]
                   if not (decision.decided and chosen == best and r < chosen)]
    if shown_worse:
        text += f" Shown worse than the best by more than the margin: {_list(shown_worse)}."
    if by_status["not paired"]:
        text += f" Not compared (no shared seeds or other test images): {_list(by_status['not paired'])}."
    return text
