"""Agreement of attribution maps: the scores, and the table and figure of a real sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from resomap.measure.maps import explanation_dir, mass_fraction, rank_correlation, resample, top_iou
from resomap.run import record as records
from resomap.run.identity import RunIdentity
from resomap.run.record_schema import DataInfo, TestMetrics
from resomap.run.record_write import write_record
from resomap.study.agreement import agreement_table, write_agreement
from resomap.study.grid_sections import explanations_section
from resomap.study.study import build_study


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


def _explained_run(results_dir: Path, data_root: Path, resolution: int, images: list[str],
                   maps: np.ndarray, sanity: list[float], completeness_error: float | None = None) -> None:
    """A record whose explain section and maps file look like the callback's."""
    name = f"tiny_cnn_{resolution}"
    arrays = {"images": np.array(images), "grad_cam__label": maps.astype(np.float16)}
    folder = explanation_dir(results_dir, name)
    folder.mkdir(parents=True)
    np.savez(folder / "maps.npz", **arrays)
    record = records.RunRecord(
        identity=RunIdentity("tiny_cnn", resolution, 0, "synthetic", "fp", "hash"), timestamp="t",
        classes=["a", "b"], data=DataInfo("synthetic", str(data_root), "fp"),
        test_metrics=TestMetrics(None, None, None, None, None, None, {}, [], 0),
        explain={"maps_file": "maps.npz", "data_root": str(data_root), "methods": {"grad_cam": {
            "sanity_spearman": float(np.mean(sanity)),
            "sanity_abs_spearman": float(np.mean(np.abs(sanity))),
            **({"completeness_error": completeness_error, "completeness_large": completeness_error > 0.05}
               if completeness_error is not None else {})}}})
    write_record(results_dir, record)


def _masked_pair(tmp_path: Path, completeness_error: float | None = None) -> Path:
    """Two explained resolutions of one model whose maps lie wholly inside a lesion covering a quarter
    of the image."""
    from PIL import Image

    data_root, results_dir = tmp_path / "data", tmp_path / "results"
    images = ["test/a/a_00000.jpg", "test/b/b_00000.jpg"]
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 255  # the lesion covers a quarter of the image
    for image in images:
        path = data_root / "masks" / Path(image).parent / f"{Path(image).stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(path)
    inside = np.zeros((2, 32, 32), np.float32)
    inside[:, :8] = 1.0  # every bit of attribution inside the lesion
    _explained_run(results_dir, data_root, 32, images, inside, [0.8, -0.8], completeness_error)
    _explained_run(results_dir, data_root, 64, images, resample(inside, 64), [0.1, 0.1], completeness_error)
    return results_dir


def test_agreement_shows_the_lesion_share_as_chance_level(tmp_path: Path):
    summary, per_image = agreement_table(_masked_pair(tmp_path))
    low = next(row for row in summary if row["resolution"] == 32)
    assert low["lesion_mass_fraction"] == pytest.approx(1.0, abs=0.02)
    assert low["lesion_area_fraction"] == pytest.approx(0.25)
    assert (low["sanity_spearman"], low["sanity_abs_spearman"]) == (pytest.approx(0.0), pytest.approx(0.8))
    assert all(row["lesion_area_fraction"] == pytest.approx(0.25) for row in per_image)


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
        assert 0 < row["lesion_area_fraction"] < 1 and row["data_name"] == "synthetic"
        if row["method"] == "integrated_gradients":
            assert row["completeness_error"] >= 0 and isinstance(row["completeness_large"], bool)
        if row["method"] == "grad_cam":
            assert row["sanity_abs_spearman"] >= abs(row["sanity_spearman"])
        if row["resolution"] == 48:
            assert row["spearman"] == pytest.approx(1.0) and row["iou_top10"] == pytest.approx(1.0)
        else:
            assert -1 <= row["spearman"] <= 1 and 0 <= row["iou_top10"] <= 1

    _, written = write_agreement(results_dir)
    names = {path.name for path in written}
    assert {"agreement.csv", "agreement_per_image.csv", "attribution_tiny_cnn.jpg"} <= names
    with open(results_dir / "explanations" / "agreement.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    figure = results_dir / "explanations" / "attribution_tiny_cnn.jpg"
    assert figure.read_bytes()[:3] == b"\xff\xd8\xff" and figure.stat().st_size > 5000


def test_report_section_shows_chance_sanity_magnitude_and_a_large_completeness_error(tmp_path: Path):
    results_dir = _masked_pair(tmp_path, completeness_error=0.31)
    section = explanations_section(build_study(results_dir, evaluate_cross_res=False))
    row = next(line for line in section.markdown.splitlines() if line.startswith("| tiny\\_cnn | 32 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # model, resolution, method, spearman, IoU, lesion mass (chance), sanity mean, |sanity| mean, completeness
    assert cells[5] == "1.000 (chance 0.250)"
    assert (cells[6], cells[7]) == ("0.000", "0.800")
    assert cells[8] == "**0.310 (large)**"
    assert (results_dir / "plots" / "attribution_tiny_cnn.jpg").is_file()
