"""Does the study's decision method recover a known answer? Rates over many simulated studies.

Every simulated study is what a researcher runs: ``seeds`` training runs at each resolution on
one training set, tested on one test set, decided by :func:`resomap.study.decide.decide` with
the report's settings. The studies are independent: each has its own seeds and its own test set
drawn from the generator; all share the training set, as the runs of one real study do (the
bootstrap's intervals are about seeds and test images for a given training set, and so is the
truth they are scored against).

The truth comes from the same command: a reference study with many seeds and a large test set
(:class:`Reference`), whose mean metric per resolution is taken as the true value. Three rates:

- recovery: the share of studies whose recommendation is the planted answer (the smallest
  resolution that keeps the texture, :func:`resomap.study.simulate.planted_answer`);
- wrong confident claims: the share of comparisons (a resolution against the study's best)
  called ``inferior`` while truly within the margin of that best, or ``non-inferior`` while
  truly worse than the margin;
- coverage: the share of the comparisons' nominal intervals of the difference (resolution minus
  best) that hold the true difference.

Each rate comes with a Wilson interval for its Monte Carlo error. Comparisons of one study share
its test set and seeds, so their rates' intervals are somewhat too narrow; the per-study rates
(recovery, studies with any wrong claim) are exact binomials.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy import stats as scipy_stats

from resomap.errors import ResoMapError
from resomap.study import simulate
from resomap.study.decide import Decision, Settings, decide
from resomap.study.stats import Predictions, balanced_accuracy

log = logging.getLogger(__name__)

REFERENCE_SEED_BASE = 1_000_000  # reference seeds never meet a study's seeds
TRAIN, TEST, REFERENCE_TEST = 0, 1, 2  # the generator's streams for the three kinds of image set


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


def _ci(successes: int, trials: int) -> tuple[float, float] | None:
    if trials == 0:
        return None
    found = scipy_stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return float(found.low), float(found.high)


@dataclass(frozen=True)
class Rate:
    """``count`` of ``total`` with its 95 % Wilson interval (None when ``total`` is 0)."""

    count: int
    total: int

    @property
    def value(self) -> float:
        return self.count / self.total if self.total else math.nan

    @property
    def interval(self) -> tuple[float, float] | None:
        return _ci(self.count, self.total)

    def as_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {"count": self.count, "total": self.total, "rate": self.value if self.total else None,
                "wilson_95": list(interval) if interval else None}

    def text(self) -> str:
        if not self.total:
            return "n/a (0 cases)"
        low, high = self.interval
        return f"{self.value:.1%} ({self.count}/{self.total}; 95 % CI {low:.1%}-{high:.1%})"


@dataclass(frozen=True)
class Reference:
    """The large-sample truth: mean metric over many seeds on a large test set."""

    means: dict[int, float]
    standard_errors: dict[int, float]  # seed-to-seed spread / sqrt(seeds): the truth's own noise
    decision: Decision
    seeds: int
    test_images: int

    def difference(self, resolution: int, best: int) -> float:
        return self.means[resolution] - self.means[best]

    def within_margin(self, resolution: int, best: int, margin: float) -> bool:
        return self.difference(resolution, best) > -margin

    def answer(self, margin: float) -> int:
        """The smallest resolution truly within the margin of the truly best one."""
        top = max(self.means.values())
        return min(res for res, mean in self.means.items() if mean - top > -margin)


@dataclass(frozen=True)
class Comparison:
    """One resolution against one study's best, scored against the reference."""

    study: int
    resolution: int
    best: int
    status: str
    estimate: float
    low: float
    high: float
    truth: float
    truly_within: bool

    @property
    def wrong(self) -> bool:
        return ((self.status == "inferior" and self.truly_within)
                or (self.status == "non-inferior" and not self.truly_within))

    @property
    def covered(self) -> bool:
        return self.low <= self.truth <= self.high


@dataclass(frozen=True)
class StudyOutcome:
    study: int
    recommended: int | None
    best: int | None
    decided: bool
    comparisons: tuple[Comparison, ...]


@dataclass
class Validation:
    """Everything the command found: the set-up, the reference, each study, the rates."""

    resolutions: list[int]
    kept: dict[int, float]
    planted: int
    nyquist_cut: float
    reference: Reference
    outcomes: list[StudyOutcome]
    settings: Settings
    design: Design
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def comparisons(self) -> list[Comparison]:
        return [c for outcome in self.outcomes for c in outcome.comparisons]

    def rates(self) -> dict[str, Rate]:
        """The three rates and their parts (see the module's docstring)."""
        n = len(self.outcomes)
        compared = self.comparisons
        within = [c for c in compared if c.truly_within]
        worse = [c for c in compared if not c.truly_within]
        return {
            "recovery": Rate(sum(o.recommended == self.planted for o in self.outcomes), n),
            "decided": Rate(sum(o.decided for o in self.outcomes), n),
            "decided_and_recovered": Rate(sum(o.decided and o.recommended == self.planted
                                              for o in self.outcomes), n),
            "wrong_claims": Rate(sum(c.wrong for c in compared), len(compared)),
            "wrongly_inferior": Rate(sum(c.status == "inferior" for c in within), len(within)),
            "wrongly_non_inferior": Rate(sum(c.status == "non-inferior" for c in worse), len(worse)),
            "studies_with_a_wrong_claim": Rate(sum(any(c.wrong for c in o.comparisons)
                                                   for o in self.outcomes), n),
            "coverage": Rate(sum(c.covered for c in compared), len(compared)),
            "coverage_truly_within": Rate(sum(c.covered for c in within), len(within)),
            "coverage_truly_worse": Rate(sum(c.covered for c in worse), len(worse)),
        }


def score(study: int, decision: Decision, reference: Reference, margin: float) -> StudyOutcome:
    """One study's decision against the reference."""
    found = []
    for res, verdict in sorted(decision.verdicts.items()):
        if verdict.difference is None or decision.best is None:
            continue
        d = verdict.difference
        found.append(Comparison(study, res, decision.best, verdict.status, d.difference, d.low, d.high,
                                reference.difference(res, decision.best),
                                reference.within_margin(res, decision.best, margin)))
    return StudyOutcome(study, decision.recommended, decision.best, decision.decided, tuple(found))


def _train_all(train_x: torch.Tensor, train_y: np.ndarray, resolutions: list[int], seeds: list[int],
               planted: simulate.Planted, training: simulate.Training, group: int,
               progress: Callable[[str], None]) -> dict[int, simulate.Models]:
    """Every seed's run at every resolution, ``group`` runs at a time."""
    models = {}
    for res in resolutions:
        start = time.perf_counter()
        images = simulate.resized(train_x, res)
        chunks = [simulate.train(images, train_y, seeds[i:i + group], planted.classes, training)
                  for i in range(0, len(seeds), group)]
        models[res] = simulate.Models.concat(chunks)
        progress(f"trained {len(seeds)} runs at {res} px in {time.perf_counter() - start:.1f} s")
    return models


def run(planted: simulate.Planted, training: simulate.Training, design: Design, settings: Settings,
        resolutions: list[int], progress: Callable[[str], None] = log.info) -> Validation:
    """Train the reference's and the studies' runs, decide every study, score them."""
    resolutions = sorted(resolutions)
    kept = simulate.check_resolutions(planted, resolutions)
    answer = simulate.planted_answer(kept)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    train_x, train_y = simulate.make_images(planted, design.train_per_class, (design.data_seed, TRAIN))
    study_seeds = list(range(design.studies * design.seeds))
    reference_seeds = [REFERENCE_SEED_BASE + i for i in range(design.reference_seeds)]
    models = _train_all(train_x, train_y, resolutions, study_seeds + reference_seeds, planted, training,
                        design.group, progress)
    seconds["training"] = time.perf_counter() - started

    started = time.perf_counter()
    ref_x, ref_y = simulate.make_images(planted, design.reference_per_class,
                                        (design.data_seed, REFERENCE_TEST))
    first = len(study_seeds)
    ref_runs = {res: dict(zip(reference_seeds, simulate.predict(
        models[res].select(range(first, first + len(reference_seeds))), simulate.resized(ref_x, res), ref_y)))
        for res in resolutions}
    scores = {res: [balanced_accuracy(p.labels, p.predictions) for p in runs.values()]
              for res, runs in ref_runs.items()}
    reference = Reference(
        {res: float(np.mean(v)) for res, v in scores.items()},
        {res: float(np.std(v, ddof=1) / math.sqrt(len(v))) for res, v in scores.items()},
        decide(ref_runs, replace(settings, n_resamples=design.reference_resamples)),
        design.reference_seeds, int(ref_y.size))
    seconds["reference"] = time.perf_counter() - started
    progress("reference: " + ", ".join(f"{res} px {m:.3f} +- {reference.standard_errors[res]:.3f}"
                                       for res, m in reference.means.items()))

    started = time.perf_counter()
    outcomes = []
    for study in range(design.studies):
        test_x, test_y = simulate.make_images(planted, design.test_per_class, (design.data_seed, TEST, study))
        own = range(study * design.seeds, (study + 1) * design.seeds)
        runs: dict[int, dict[int, Predictions]] = {
            res: dict(zip(own, simulate.predict(models[res].select(own), simulate.resized(test_x, res),
                                                test_y)))
            for res in resolutions}
        decision = decide(runs, replace(settings, seed=settings.seed + study))
        outcomes.append(score(study, decision, reference, settings.margin))
        if (study + 1) % max(1, design.studies // 10) == 0:
            progress(f"decided {study + 1}/{design.studies} studies")
    seconds["studies"] = time.perf_counter() - started
    return Validation(resolutions, kept, answer, planted.nyquist_cut, reference, outcomes, settings, design,
                      seconds)


# ------------------------------------------------------------------------------ reporting

TARGETS = {"recovery": ("at least 90 %", lambda r: r >= 0.90),
           "wrong_claims": ("at most 5 %", lambda r: r <= 0.05),
           "coverage": ("93 % to 97 %", lambda r: 0.93 <= r <= 0.97)}


def summary(validation: Validation, planted: simulate.Planted, training: simulate.Training,
            machine: str, threads: int) -> dict[str, Any]:
    """The JSON written to results/validation/validation.json."""
    rates = validation.rates()
    reference = validation.reference
    return {
        "resolutions": validation.resolutions,
        "kept_contrast": {str(r): v for r, v in validation.kept.items()},
        "nyquist_cut_px": validation.nyquist_cut,
        "planted_answer": validation.planted,
        "reference_answer": reference.answer(validation.settings.margin),
        "reference": {
            "seeds": reference.seeds, "test_images": reference.test_images,
            "mean": {str(r): v for r, v in reference.means.items()},
            "standard_error": {str(r): v for r, v in reference.standard_errors.items()},
            "decision": {"best": reference.decision.best, "recommended": reference.decision.recommended,
                         "decided": reference.decision.decided,
                         "status": {str(r): v.status for r, v in reference.decision.verdicts.items()},
                         "statement": reference.decision.statement},
        },
        "rates": {name: rate.as_dict() for name, rate in rates.items()},
        "targets": {name: {"target": text, "met": bool(rates[name].total and ok(rates[name].value))}
                    for name, (text, ok) in TARGETS.items()},
        "settings": asdict(validation.settings),
        "design": asdict(validation.design),
        "planted": asdict(planted),
        "training": asdict(training),
        "seconds": validation.seconds,
        "machine": machine,
        "threads": threads,
        "studies": [{"study": o.study, "recommended": o.recommended, "best": o.best, "decided": o.decided,
                     "comparisons": [{"resolution": c.resolution, "status": c.status, "estimate": c.estimate,
                                      "low": c.low, "high": c.high, "truth": c.truth,
                                      "truly_within_margin": c.truly_within}
                                     for c in o.comparisons]}
                    for o in validation.outcomes],
    }


def markdown(validation: Validation, machine: str, threads: int, command: str) -> str:
    """A short table of the rates, the reference and how they were made."""
    rates = validation.rates()
    reference = validation.reference
    settings, design = validation.settings, validation.design
    lines = [
        "# Validation: a planted resolution effect",
        "",
        f"Command: `{command}`",
        "",
        f"{design.studies} studies, each {design.seeds} seeds per resolution at "
        f"{', '.join(f'{r} px' for r in validation.resolutions)}, {design.test_per_class} test images per "
        f"class; margin {settings.margin:g} ({settings.metric_label}), {settings.confidence:.0%} intervals, "
        f"{settings.n_resamples} resamples. Planted answer: {validation.planted} px (the texture is erased "
        f"below {validation.nyquist_cut:g} px); the reference's answer: "
        f"{reference.answer(settings.margin)} px.",
        "",
        "| Rate | Figure (95 % Wilson interval) | Target |",
        "|---|---|---|",
    ]
    for name, label in (("recovery", "Recovery (recommendation = planted answer)"),
                        ("wrong_claims", "Wrong confident claims (per comparison)"),
                        ("coverage", "Coverage of the 95 % intervals of the difference")):
        target, ok = TARGETS[name]
        met = "met" if rates[name].total and ok(rates[name].value) else "missed"
        lines.append(f"| {label} | {rates[name].text()} | {target}: {met} |")
    lines += [
        f"| Decided studies | {rates['decided'].text()} | |",
        f"| Wrongly shown worse (truly within the margin) | {rates['wrongly_inferior'].text()} | |",
        f"| Wrongly non-inferior (truly worse) | {rates['wrongly_non_inferior'].text()} | |",
        f"| Studies with any wrong claim | {rates['studies_with_a_wrong_claim'].text()} | |",
        f"| Coverage, truly within the margin | {rates['coverage_truly_within'].text()} | |",
        f"| Coverage, truly worse | {rates['coverage_truly_worse'].text()} | |",
        "",
        f"Reference ({reference.seeds} seeds, {reference.test_images} test images), balanced accuracy:",
        "",
        "| Resolution | Texture kept | Mean (standard error) | Reference verdict |",
        "|---|---|---|---|",
    ]
    for res in validation.resolutions:
        verdict = reference.decision.verdicts.get(res)
        lines.append(f"| {res} px | {validation.kept[res]:.1%} | {reference.means[res]:.3f} "
                     f"({reference.standard_errors[res]:.3f}) | {verdict.status if verdict else '-'} |")
    total = sum(validation.seconds.values())
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in validation.seconds.items())
    plural = "s" if threads != 1 else ""
    lines += ["", f"Time: {total:.0f} s ({parts}) on {machine}, {threads} thread{plural}.", ""]
    return "\n".join(lines)
