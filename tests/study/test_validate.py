"""The validation command: simulated runs, the planted answer and the rates it reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module

from resomap.errors import ResoMapError
from resomap.study import simulate
from resomap.study.validation_scoring import Comparison

PLANTED = simulate.Planted()


def test_resize_erases_the_texture_below_the_cut_and_keeps_it_above() -> None:
    kept = simulate.check_resolutions(PLANTED, [8, 12, 24, 32])
    assert kept[8] <= simulate.ERASED and kept[12] <= simulate.ERASED
    assert kept[24] >= simulate.KEPT and kept[32] == pytest.approx(1.0)
    assert simulate.planted_answer(kept) == 24
    assert max(r for r, v in kept.items() if v <= simulate.ERASED) < PLANTED.nyquist_cut < 24


@pytest.mark.parametrize("resolutions, named", [([8, 14, 32], "14"), ([24, 32], "below the cut"),
                                                ([8, 30], "30"), ([8, 64], "64")])
def test_resolutions_the_planted_answer_cannot_score_are_refused(resolutions: list[int], named: str) -> None:
    with pytest.raises(ResoMapError, match=named):
        simulate.check_resolutions(PLANTED, resolutions)


def test_a_resolution_that_keeps_an_aliased_remnant_is_refused() -> None:
    """At 48 px source, 20 px keeps about 8 % of the texture: neither erased nor kept."""
    with pytest.raises(ResoMapError, match="20 px keeps"):
        simulate.check_resolutions(simulate.Planted(size=48), [8, 20, 48])


def test_a_flip_of_the_image_is_the_kernels_tap_permutation() -> None:
    """The training loop flips kernels instead of images: the same features, by construction."""
    images, _ = simulate.make_images(PLANTED, 2, (0, 9))
    kernel = torch.randn(16, 3)
    for flip, dims in ((1, (-1,)), (2, (-2,)), (3, (-2, -1))):
        flipped = simulate.patches(images.flip(dims), 0.0, 1.0)
        permuted = simulate.patches(images, 0.0, 1.0)[..., simulate.FLIPS[flip]]
        torch.testing.assert_close(torch.relu(flipped @ kernel).mean(1),
                                   torch.relu(permuted @ kernel).mean(1))


def test_a_run_depends_on_its_seed_not_on_the_runs_trained_beside_it() -> None:
    images, labels = simulate.make_images(PLANTED, 8, (0, 0))
    test_x, test_y = simulate.make_images(PLANTED, 8, (0, 1))
    training = simulate.Training(channels=4, epochs=3, batch_size=8)
    alone = simulate.train(simulate.resized(images, 24), labels, [5], PLANTED.classes, training)
    together = simulate.train(simulate.resized(images, 24), labels, [3, 5, 7], PLANTED.classes, training)
    a = simulate.predict(alone, simulate.resized(test_x, 24), test_y)[0]
    b = simulate.predict(together, simulate.resized(test_x, 24), test_y)
    np.testing.assert_allclose(a.probabilities, b[1].probabilities, atol=1e-5)
    assert not np.allclose(b[0].probabilities, b[1].probabilities, atol=1e-3)  # seeds differ


@pytest.mark.parametrize("status, within, wrong", [
    ("inferior", True, True), ("inferior", False, False), ("non-inferior", False, True),
    ("non-inferior", True, False), ("undecided", True, False), ("undecided", False, False)])
def test_a_claim_is_wrong_only_when_the_reference_contradicts_it(status: str, within: bool,
                                                                 wrong: bool) -> None:
    truth = -0.01 if within else -0.2
    found = Comparison(0, 8, 32, status, truth, truth - 0.03, truth + 0.03, truth, within)
    assert found.wrong is wrong and found.covered


@pytest.mark.slow
def test_validate_command_reports_rates_computed_from_its_studies(tmp_path: Path) -> None:
    studies, seeds, resolutions = 3, 2, [8, 12, 24, 32]
    result = run_module("resomap", [
        "validate", f"output_dir={tmp_path / 'out'}", "threads=1", f"design.studies={studies}",
        f"design.seeds={seeds}", "design.reference_seeds=4", "design.reference_per_class=150",
        "design.reference_resamples=200", "design.test_per_class=40", "report.n_resamples=200",
        "training.epochs=12"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    found = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert "| Recovery" in (tmp_path / "out" / "validation.md").read_text()
    rates, reference, margin = found["rates"], found["reference"], found["settings"]["margin"]

    # The reference shows the planted effect: erased resolutions are worse than the margin.
    means = {int(r): v for r, v in reference["mean"].items()}
    top = max(means.values())
    assert found["planted_answer"] == 24 == found["reference_answer"]
    assert means[8] < top - margin and means[12] < top - margin
    assert reference["decision"]["status"]["8"] == "inferior"

    # The rates are counts over the studies the command ran, recomputed here from each comparison.
    runs = found["studies"]
    comparisons = [c for study in runs for c in study["comparisons"]]
    assert len(runs) == studies and len(comparisons) == studies * (len(resolutions) - 1)
    assert rates["recovery"]["total"] == studies
    assert rates["recovery"]["count"] == sum(s["recommended"] == found["planted_answer"] for s in runs)
    for study in runs:
        for c in study["comparisons"]:
            assert c["truth"] == pytest.approx(means[c["resolution"]] - means[study["best"]])
            assert c["truly_within_margin"] == (c["truth"] > -margin)
    wrong = sum((c["status"] == "inferior" and c["truly_within_margin"])
                or (c["status"] == "non-inferior" and not c["truly_within_margin"]) for c in comparisons)
    covered = sum(c["low"] <= c["truth"] <= c["high"] for c in comparisons)
    assert (rates["wrong_claims"]["count"], rates["wrong_claims"]["total"]) == (wrong, len(comparisons))
    assert (rates["coverage"]["count"], rates["coverage"]["total"]) == (covered, len(comparisons))
    assert (rates["coverage_truly_within"]["total"] + rates["coverage_truly_worse"]["total"]
            == len(comparisons))
    for rate in rates.values():
        low, high = rate["wilson_95"]
        assert 0 <= low <= rate["rate"] <= high <= 1


def test_validate_command_names_a_bad_setting(tmp_path: Path) -> None:
    result = run_module("resomap", ["validate", f"output_dir={tmp_path}", "design.seeds=1"], cwd=tmp_path)
    assert result.returncode == 2
    assert "design.seeds=1" in result.stderr and "two seeds" in result.stderr
    assert not any(tmp_path.iterdir())
