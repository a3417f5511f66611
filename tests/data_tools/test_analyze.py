"""``resomap data analyze``: the seed's analysis files, right counts, leakage warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_SPEC, run_module
from PIL import Image

from resomap.data.synthetic import CLASSES, split_counts
from resomap.data_tools.analyze import AnalyzeError, analyze_dataset, summary_text

SPLIT_SIZES = {"train": TINY_SPEC["n_train"], "val": TINY_SPEC["n_val"], "test": TINY_SPEC["n_test"]}


def test_cli_writes_the_analysis_and_flags_a_planted_duplicate(tiny_data_root: Path, tmp_path: Path):
    root = tmp_path / "lesions"
    shutil.copytree(tiny_data_root, root)
    shutil.copyfile(root / "train" / "nv" / "nv_00000.jpg", root / "test" / "mel" / "planted.jpg")

    completed = run_module("resomap.data_tools", ["analyze", f"root={root}"], cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    analysis = tmp_path / "analysis"
    report = json.loads((analysis / "dataset_analysis.json").read_text())
    for split, size in SPLIT_SIZES.items():
        expected = split_counts(size)
        if split == "test":
            expected["mel"] += 1
        entry = report[split]
        assert entry["class_counts"] == expected
        assert entry["total_images"] == sum(expected.values())
        assert entry["num_classes"] == len(CLASSES)
        assert sum(entry["class_percentages"].values()) == pytest.approx(100.0)
        assert entry["image_stats"]["width"]["max"] == TINY_SPEC["width"]
        assert entry["image_stats"]["modes"] == {"RGB": entry["total_images"]}

    duplicates = report["cross_split_duplicates"]
    assert duplicates["num_groups"] == 1
    assert duplicates["groups"][0]["files"] == ["test/mel/planted.jpg", "train/nv/nv_00000.jpg"]

    text = (analysis / "dataset_summary.txt").read_text()
    assert f"Total images: {SPLIT_SIZES['train']}" in text
    assert f"   nv {split_counts(SPLIT_SIZES['train'])['nv']:>6}" in text
    assert "WARNING" in text and "test/mel/planted.jpg" in text
    for name in ("class_distribution.png", "split_comparison.png"):
        with Image.open(analysis / name) as image:
            assert image.format == "PNG" and image.width > 300
    assert "leakage" in completed.stdout + completed.stderr


def test_clean_split_has_no_duplicates_and_sampling_is_capped(tiny_data_root: Path):
    report = analyze_dataset(tiny_data_root, sample_per_class=1)
    assert report["cross_split_duplicates"] == {"num_groups": 0, "num_files": 0, "groups": []}
    assert all(report[split]["image_stats"]["num_samples"] == len(CLASSES) for split in SPLIT_SIZES)
    assert "None: no file appears in more than one split." in summary_text(report)


def test_a_folder_before_splitting_is_analysed_as_one_split(tiny_data_root: Path, tmp_path: Path):
    shutil.copytree(tiny_data_root / "train", tmp_path / "unsplit")
    report = analyze_dataset(tmp_path / "unsplit")
    assert report["all"]["class_counts"] == split_counts(SPLIT_SIZES["train"])
    assert "cross_split_duplicates" not in report


def test_a_folder_without_images_is_refused(tmp_path: Path):
    (tmp_path / "empty" / "nv").mkdir(parents=True)
    with pytest.raises(AnalyzeError, match="No images"):
        analyze_dataset(tmp_path / "empty")
