"""Which runs an adaptive study adds at a look: only those that can still change the answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from resomap.errors import ResoMapError
from resomap.study.adaptive import (
    StudySettings,
    check_study,
    extend,
    fits_budget,
    looks,
    projected_seconds,
    seed_sequence,
)

SETTINGS = StudySettings(min_seeds=2, max_seeds=4)


@dataclass
class Verdict:
    status: str


@dataclass
class Decision:
    """The fields of resomap.study.verdicts.Decision that the selection reads."""

    best: int | None
    recommended: int | None
    decided: bool
    verdicts: dict[int, Verdict] = field(default_factory=dict)


def decision(best: int, recommended: int, decided: bool, **statuses: str) -> Decision:
    verdicts = {int(res.lstrip("r")): Verdict(status) for res, status in statuses.items()}
    verdicts[best] = Verdict("best")
    return Decision(best, recommended, decided, verdicts)


def test_the_first_look_gives_every_resolution_min_seeds_without_deciding():
    seeds = {224: {0}, 256: {0}, 320: {0}}
    extension = extend(seeds, None, {0}, SETTINGS)
    assert extension.additions == {224: [1], 256: [1], 320: [1]}
    assert not extension.done


def test_a_decided_configuration_gets_nothing():
    seeds = {224: {0, 1}, 256: {0, 1}, 320: {0, 1}}
    extension = extend(seeds, decision(320, 256, True, r224="inferior", r256="non-inferior"), {0}, SETTINGS)
    assert extension.additions == {}
    assert extension.done


def test_the_best_and_every_undecided_resolution_get_the_next_seed():
    seeds = {224: {0, 1}, 256: {0, 1}, 320: {0, 1}, 384: {0, 1}, 512: {0, 1}}
    # 320 best; 224 and 512 undecided (512 may yet prove better than 320 by more than the
    # margin); 256 shown worse and 384 non-inferior: more seeds for them change nothing.
    found = decision(320, 320, False, r224="undecided", r256="inferior", r384="non-inferior",
                     r512="undecided")
    extension = extend(seeds, found, {0}, SETTINGS)
    assert extension.additions == {224: [2], 320: [2], 512: [2]}


def test_decide_s_decided_flag_does_not_stop_an_undecided_comparison_above_the_recommendation():
    # Recommended 224 = best and smallest, so decide() calls it decided; 320 is undecided and could
    # still turn out better by more than the margin.
    seeds = {224: {0, 1}, 320: {0, 1}}
    extension = extend(seeds, decision(224, 224, True, r320="undecided"), {0}, SETTINGS)
    assert extension.additions == {224: [2], 320: [2]}


def test_an_undecided_resolution_behind_the_best_is_brought_level_with_it():
    # The best changed to a resolution that has more seeds: the undecided one gets every seed it lacks.
    seeds = {224: {0, 1}, 320: {0, 1, 2}}
    extension = extend(seeds, decision(320, 320, False, r224="undecided"), {0}, SETTINGS)
    assert extension.additions == {224: [2, 3], 320: [3]}


def test_max_seeds_stops_a_configuration():
    seeds = {224: {0, 1, 2, 3}, 320: {0, 1, 2, 3}}
    extension = extend(seeds, decision(320, 320, False, r224="undecided"), {0}, SETTINGS)
    assert extension.additions == {}
    assert extension.done and "max_seeds" in extension.reason


def test_a_comparison_seeds_cannot_decide_adds_nothing():
    seeds = {224: {0, 1}, 320: {0, 1}}
    extension = extend(seeds, decision(320, 320, False, r224="not paired"), {0}, SETTINGS)
    assert extension.additions == {} and extension.done


def test_added_seeds_follow_the_grid_s_own_seeds():
    assert seed_sequence({7}, 3) == [7, 8, 9]
    assert seed_sequence({0, 5}, 4) == [0, 5, 6, 7]
    seeds = {224: {7}, 320: {7}}
    assert extend(seeds, None, {7}, SETTINGS).additions == {224: [8], 320: [8]}


def test_a_look_projected_past_the_budget_is_not_started():
    recorded = {224: [50.0, 70.0], 320: [110.0, 130.0]}
    projected = projected_seconds({224: [2], 320: [2]}, recorded)
    assert projected == pytest.approx(60.0 + 120.0)
    # 10 minutes of budget, 8 spent: 3 more minutes do not fit, 2 do.
    assert not fits_budget(projected, 8 * 60.0, 10)
    assert fits_budget(projected, 7 * 60.0, 10)
    assert fits_budget(projected, 10**6, None)


def test_a_resolution_without_a_recorded_time_is_projected_at_the_configuration_s_mean():
    assert projected_seconds({512: [1, 2]}, {224: [10.0], 320: [30.0]}) == pytest.approx(40.0)


def test_looks_cover_every_seed_count_that_decides():
    assert looks(2, 5) == 4
    assert StudySettings(2, 2).looks == 1


@pytest.mark.parametrize("values, key", [
    ({"min_seeds": 1}, "study.min_seeds"),
    ({"max_seeds": 1}, "study.max_seeds"),
    ({"budget_minutes": 0}, "study.budget_minutes"),
    ({"budget_minutes": "ten"}, "study.budget_minutes"),
    ({"report_looks": 2}, "report.looks"),
])
def test_bad_settings_name_the_key(values, key):
    with pytest.raises(ResoMapError, match=key.replace(".", r"\.")):
        check_study(**values)


def test_the_adaptive_study_splits_the_report_s_alpha_over_its_looks(compose_train):
    cfg = compose_train("study=adaptive", "study.max_seeds=3")
    assert cfg.report.looks == 2
    assert compose_train("study=adaptive").report.looks == 4
    assert compose_train().report.looks == 1  # study=grid: one look, the report's default


def test_a_run_of_an_adaptive_study_is_the_same_run_as_in_a_grid(compose_train):
    from resomap.run.identity import RunIdentity

    grid = RunIdentity.from_config(compose_train("seed=1"), "data")
    adaptive = RunIdentity.from_config(compose_train("study=adaptive", "study.max_seeds=3", "seed=1"), "data")
    assert adaptive == grid and adaptive.digest == grid.digest
