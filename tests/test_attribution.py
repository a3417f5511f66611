"""Agreement of attribution maps: the scores, and the table and figure of a real sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from resomap.measure.maps import mass_fraction, rank_correlation, resample, top_iou
from resomap.study.agreement import agreement_table, write_agreement


def _smooth_map(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((8, 8)).astype(np.float32)
    return resample(coarse[None], size)[0]


def test_a_map_agrees_with_itself():
    attribution = _smooth_map(0)
    assert rank_correlation(attribution, attribution) == pytest.approx(1.0)
    assert top_iou(attribution, attribution) == 1.0
    assert rank_correlation(attribution, 3 * attribution + 1) == pytest.approx(1.0)


def test_a_shuffled_map_does_not_agree():
    attribution = _smooth_map(0)
    shuffled = np.random.default_rng(1).permutation(attribution.ravel()).reshape(attribution.shape)
    assert abs(rank_correlation(attribution, shuffled)) < 0.05
    # Two random 10% regions overlap by chance: IoU about 0.1 * 0.1 / 0.19 = 0.05.
    assert top_iou(attribution, shuffled) < 0.1


def test_a_constant_map_has_no_rank_correlation():
    assert np.isnan(rank_correlation(np.zeros((8, 8)), _smooth_map(0, 8)))


def test_mass_fraction_inside_the_mask():
    mask = np.zeros((10, 10), np.float32)
    mask[:5] = 1
    assert mass_fraction(mask * 2.0, mask) == 1.0
    assert mass_fraction(np.ones((10, 10)), mask) == pytest.approx(0.5)
    assert np.isnan(mass_fraction(np.zeros((10, 10)), mask))


def test_resample_keeps_shape_and_sign():
    maps = np.stack([_smooth_map(0, 48), _smooth_map(1, 48)])
    assert resample(maps, 32).shape == (2, 32, 32)
    assert resample(maps, 64).shape == (2, 64, 64)
    assert (resample(maps, 32) >= 0).all()


@pytest.mark.slow
def test_sweep_agreement_table_and_figure(train_cli, tmp_path: Path):
    completed = train_cli("-m", "model=tiny_cnn", "res=32,48", "callbacks.explain.num_images=7",
                          "callbacks.explain.methods.integrated_gradients.n_steps=2",
                          "callbacks.explain.sanity_methods=[grad_cam]")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results_dir = tmp_path / "results"
    sections = {res: json.loads((results_dir / "test_results" / f"tiny_cnn_{res}.json").read_text())
                for res in (32, 48)}
    sections = {res: result["explain"] for res, result in sections.items()}
    assert [i["image"] for i in sections[32]["images"]] == [i["image"] for i in sections[48]["images"]]

    summary, per_image = agreement_table(results_dir)
    assert {(row["resolution"], row["method"]) for row in summary} == {
        (res, method) for res in (32, 48) for method in ("grad_cam", "integrated_gradients", "saliency")}
    assert len(per_image) == 2 * 3 * 7
    for row in summary:
        assert row["reference_resolution"] == 48 and row["grid"] == 32 and row["num_images"] == 7
        if row["method"] != "grad_cam":  # a ReLU-ed Grad-CAM map may be all zero after 1 epoch
            assert 0 <= row["lesion_mass_fraction"] <= 1
        if row["resolution"] == 48:
            assert row["spearman"] == pytest.approx(1.0) and row["iou_top10"] == pytest.approx(1.0)
        else:
            assert -1 <= row["spearman"] <= 1 and 0 <= row["iou_top10"] <= 1

    _, written = write_agreement(results_dir)
    names = {path.name for path in written}
    assert {"agreement.csv", "agreement_per_image.csv", "attribution_tiny_cnn.png"} <= names
    with open(results_dir / "explanations" / "agreement.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    figure = results_dir / "explanations" / "attribution_tiny_cnn.png"
    assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 5000
