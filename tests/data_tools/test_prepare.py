"""``resomap data prepare``: splits a user's folder, keeps existing splits, never
overwrites silently, makes synthetic stand-ins, and fails fast on the Kaggle route offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module
from PIL import Image

from resomap.data_tools.prepare import PrepareError, prepare_folder, split_sizes

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}
CLASS_SIZES = {"akiec": 3, "df": 5, "mel": 11, "nv": 40}


def _write_images(folder: Path, count: int, offset: int) -> None:
    """``count`` distinct tiny images (each file's content is unique)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.full((6, 8, 3), (offset + index) % 256, np.uint8)
        pixels[0, 0] = (offset, index % 256, 7)
        Image.fromarray(pixels).save(folder / f"img_{index:03d}.png")


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """One sub-folder per class, no splits, imbalanced like the seed's data (3 to 40 images)."""
    root = tmp_path / "lesions"
    for offset, (name, count) in enumerate(CLASS_SIZES.items()):
        _write_images(root / name, count, offset * 50)
    return root


def _listing(root: Path) -> dict[str, dict[str, list[str]]]:
    return {split: {name: sorted(path.name for path in (root / split / name).iterdir())
                    for name in sorted(CLASS_SIZES)} for split in ("train", "val", "test")}


@pytest.mark.parametrize("ratios", [RATIOS, {"train": 0.8, "val": 0.1, "test": 0.1},
                                    {"train": 0.5, "val": 0.25, "test": 0.25}])
def test_split_sizes_keep_every_split_and_the_ratios_within_one_image(ratios):
    for n_images in range(3, 120):
        sizes = split_sizes(n_images, ratios)
        assert sum(sizes.values()) == n_images
        assert min(sizes.values()) >= 1
        if min(n_images * share for share in ratios.values()) >= 1:
            assert all(abs(sizes[split] - n_images * ratios[split]) < 1 for split in ratios)


def test_cli_splits_a_class_folder_stratified(class_folder: Path, tmp_path: Path):
    output = tmp_path / "prepared"
    completed = run_module("resomap.data_tools", ["prepare", f"input_dir={class_folder}",
                                                  f"output_dir={output}"], cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    listing = _listing(output)
    for name, count in CLASS_SIZES.items():
        per_split = {split: len(listing[split][name]) for split in listing}
        assert min(per_split.values()) >= 1, (name, per_split)
        if count * min(RATIOS.values()) >= 1:
            assert all(abs(per_split[split] - count * RATIOS[split]) < 1 for split in RATIOS)
        placed = [file for split in listing for file in listing[split][name]]
        assert sorted(placed) == sorted(path.name for path in (class_folder / name).iterdir())
    link = next((output / "train" / "nv").iterdir())
    assert link.is_symlink() and link.resolve().parent == (class_folder / "nv").resolve()
    manifest = json.loads((output / "prepare.json").read_text())
    assert manifest["split"] == "stratified" and manifest["counts"]["train"]["nv"] == 28
    assert "data.root=" in completed.stdout + completed.stderr


def test_same_seed_same_split_and_no_silent_overwrite(class_folder: Path, tmp_path: Path):
    first = prepare_folder(class_folder, tmp_path / "a", RATIOS, seed=3)
    again = prepare_folder(class_folder, tmp_path / "b", RATIOS, seed=3)
    other = prepare_folder(class_folder, tmp_path / "c", RATIOS, seed=4)
    assert _listing(first) == _listing(again)
    assert _listing(first) != _listing(other)

    before = _listing(first)
    with pytest.raises(PrepareError, match="overwrite=true"):
        prepare_folder(class_folder, first, RATIOS, seed=4)
    assert _listing(first) == before

    completed = run_module("resomap.data_tools", ["prepare", f"input_dir={class_folder}",
                                                  f"output_dir={first}", "seed=4"], cwd=tmp_path, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and completed.stderr.count("error: ") == 1
    assert str(first) in completed.stderr and "overwrite=true" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert _listing(first) == before

    prepare_folder(class_folder, first, RATIOS, seed=4, overwrite=True)
    assert _listing(first) == _listing(other)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_existing_split_is_kept_and_the_trainer_reads_it(tmp_path: Path):
    download = tmp_path / "download" / "Unified Dataset"
    for split, count in (("Train", 6), ("Validation", 3), ("Test", 3)):
        for offset, name in enumerate(("bcc", "nv")):
            _write_images(download / split / name, count, offset * 20 + len(split))
    output = prepare_folder(tmp_path / "download", tmp_path / "skin_cancer", RATIOS, link="copy")

    for split, source in (("train", "Train"), ("val", "Validation"), ("test", "Test")):
        for name in ("bcc", "nv"):
            copies = sorted((output / split / name).iterdir())
            originals = sorted(path.name for path in (download / source / name).iterdir())
            assert [path.name for path in copies] == originals
            assert not copies[0].is_symlink()
    assert json.loads((output / "prepare.json").read_text())["split"] == "kept"

    from resomap.data.datamodule import ImageFolderDataModule

    datamodule = ImageFolderDataModule(str(output), image_size=16, num_workers=0)
    datamodule.setup()
    assert datamodule.classes == ["bcc", "nv"]
    assert datamodule.class_counts("train") == [6, 6]


def test_hardlinks_share_the_input_files(class_folder: Path, tmp_path: Path):
    output = prepare_folder(class_folder, tmp_path / "linked", RATIOS, link="hardlink")
    placed = next((output / "test" / "mel").iterdir())
    assert not placed.is_symlink()
    assert placed.stat().st_ino == (class_folder / "mel" / placed.name).stat().st_ino


def test_a_class_too_small_for_three_splits_is_named(class_folder: Path, tmp_path: Path):
    _write_images(class_folder / "vasc", 2, 200)
    with pytest.raises(PrepareError, match="vasc"):
        prepare_folder(class_folder, tmp_path / "out", RATIOS)
    assert not (tmp_path / "out").exists()


def test_output_overlapping_the_input_is_refused(class_folder: Path):
    for output in (class_folder / "prepared", class_folder.parent):
        with pytest.raises(PrepareError, match="overlap"):
            prepare_folder(class_folder, output, RATIOS, overwrite=True)
    assert sorted(path.name for path in class_folder.iterdir()) == sorted(CLASS_SIZES)


def test_cli_makes_a_synthetic_stand_in(tmp_path: Path):
    completed = run_module("resomap.data_tools", ["prepare", "source=synthetic", "n_train=14", "n_val=14",
                                                  "n_test=14", "width=32", "height=24", "workers=1"],
                           cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    root = tmp_path / "data" / "synthetic_14_14_14_32x24"
    images = sorted((root / "train").rglob("*.jpg"))
    assert len(images) == 14 and Image.open(images[0]).size == (32, 24)
    assert "data=skin_cancer" in completed.stdout + completed.stderr


def test_kaggle_without_credentials_fails_fast_with_what_to_set(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "resomap.data_tools", "prepare", "source=kaggle",
         f"output_dir={tmp_path / 'sc'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30,
    )
    assert completed.returncode == 2
    message = completed.stderr
    for needed in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "source=folder",
                   "vinline/unified-dataset-for-skin-cancer-classification"):
        assert needed in message, message
    assert "Traceback" not in message
    assert not (tmp_path / "sc").exists()
