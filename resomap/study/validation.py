"""Does the study's decision method recover a known answer? Simulated studies, trained and decided.

Every simulated study is what a researcher runs: ``seeds`` training runs at each resolution on
one training set, tested on one test set, decided by :func:`resomap.study.decide.decide` with
the report's settings. The studies are independent: each has its own seeds and its own test set
drawn from the generator; all share the training set, as the runs of one real study do (the
bootstrap's intervals are about seeds and test images for a given training set, and so is the
truth they are scored against).

The truth comes from the same command: a reference study with many seeds and a large test set.
This module trains and decides; the design is :mod:`~resomap.study.validation_design`, the
scoring and its rates :mod:`~resomap.study.validation_scoring`, the written files
:mod:`~resomap.study.validation_report`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from resomap.study import simulate
from resomap.study.bootstrap import Predictions
from resomap.study.decide import decide
from resomap.study.decision_settings import Settings
from resomap.study.scores import balanced_accuracy
from resomap.study.validation_design import Design
from resomap.study.validation_scoring import Reference, Validation, score

log = logging.getLogger(__name__)

REFERENCE_SEED_BASE = 1_000_000  # reference seeds never meet a study's seeds
TRAIN, TEST, REFERENCE_TEST = 0, 1, 2  # the generator's streams for the three kinds of image set


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

