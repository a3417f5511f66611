"""The embedded synthetic data and the data module that reads any ImageFolder layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resomap.data.datamodule import DatasetLayoutError, ImageFolderDataModule, dataset_fingerprint
from resomap.data.synthetic import CLASSES, generate, split_counts


def test_every_class_in_every_split_and_imbalanced(tiny_data_root: Path):
    for split in ("train", "val", "test"):
        counts = {c: len(list((tiny_data_root / split / c).glob("*.jpg"))) for c in CLASSES}
        assert all(count >= 2 for count in counts.values()), (split, counts)
        assert max(counts, key=counts.get) == "nv"
    assert len(list((tiny_data_root / "masks" / "train" / "mel").glob("*.png"))) == \
        len(list((tiny_data_root / "train" / "mel").glob("*.jpg")))


def test_generation_is_deterministic_and_reused(tmp_path: Path):
    first = generate(tmp_path / "a", n_train=14, n_val=14, n_test=14, width=64, height=48, workers=1)
    second = generate(tmp_path / "b", n_train=14, n_val=14, n_test=14, width=64, height=48, workers=2)
    for path in sorted(first.rglob("*.jpg")):
        assert path.read_bytes() == (second / path.relative_to(first)).read_bytes()
    stamp = next(first.rglob("*.jpg")).stat().st_mtime_ns
    generate(first, n_train=14, n_val=14, n_test=14, width=64, height=48)
    assert next(first.rglob("*.jpg")).stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="different data set"):
        generate(first, n_train=28, n_val=14, n_test=14, width=64, height=48)


@pytest.mark.parametrize("workers", [1, 2])
def test_generation_reports_its_progress_by_quarter(tmp_path: Path, caplog, workers: int):
    with caplog.at_level("INFO", logger="resomap.data.synthetic"):
        root = generate(tmp_path / "data", n_train=20, n_val=10, n_test=10, width=32, height=32,
                        workers=workers)
    total = len(list(root.rglob("*.jpg")))
    progress = [record.getMessage().split(" in ")[0] for record in caplog.records
                if record.getMessage().startswith("Generated")]
    assert progress == [f"Generated {total * quarter // 4}/{total} images ({25 * quarter} %)"
                        for quarter in (1, 2, 3)]


def test_split_counts_add_up_and_keep_rare_classes():
    counts = split_counts(100)
    assert sum(counts.values()) == 100
    assert min(counts.values()) >= 2


def _fine_energy(path: Path, mask_path: Path, size: int) -> float:
    """Mean high-frequency energy inside the lesion after an antialiased resize."""
    image = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR), float)
    mask = np.asarray(Image.open(mask_path).resize((size, size), Image.NEAREST)) > 0
    high = image[1:, 1:] - 0.25 * (image[1:, 1:] + image[:-1, 1:] + image[1:, :-1] + image[:-1, :-1])
    return float(np.abs(high[mask[1:, 1:]]).mean())


def test_mel_differs_from_nv_only_in_detail_lost_at_224(tmp_path: Path):
    root = generate(tmp_path / "full", n_train=14, n_val=14, n_test=14, workers=2)
    ratio = {}
    for size in (224, 512):
        energy = {}
        for label in ("mel", "nv"):
            images = sorted((root / "train" / label).glob("*.jpg"))[:2]
            energy[label] = np.mean([
                _fine_energy(p, root / "masks" / "train" / label / f"{p.stem}.png", size)
                for p in images])
        ratio[size] = energy["mel"] / energy["nv"]
    assert ratio[224] < 3 < 10 < ratio[512]


def test_datamodule_batches_at_the_run_resolution(tiny_data_root: Path):
    datamodule = ImageFolderDataModule(str(tiny_data_root), image_size=40, batch_size=8,
                                       num_workers=0, class_weighted_loss=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.classes == list(CLASSES)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (8, 3, 40, 40) and images.dtype == torch.float32
    assert labels.max() < 7
    weights = datamodule.class_weights()
    counts = torch.tensor(datamodule.class_counts("train"), dtype=torch.float32)
    assert weights.argmax() == counts.argmin() and weights.argmin() == counts.argmax()
    assert float((weights * counts).sum()) == pytest.approx(float(counts.sum()), rel=1e-5)


def test_class_only_in_val_is_an_error_naming_both(tiny_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    (root / "val" / "extra").mkdir()
    shutil.copy(next((root / "val" / "nv").glob("*.jpg")), root / "val" / "extra" / "x.jpg")
    datamodule = ImageFolderDataModule(str(root), image_size=32, num_workers=0)
    with pytest.raises(DatasetLayoutError, match=r"only in val: \['extra'\]"):
        datamodule.setup("fit")


def test_missing_split_is_an_error_naming_the_path(tiny_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetLayoutError, match=str(root / "test")):
        ImageFolderDataModule(str(root), image_size=32, num_workers=0).setup("fit")


def test_fingerprint_changes_when_a_file_changes(tiny_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    before = dataset_fingerprint(root)
    image = next((root / "train" / "nv").glob("*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")
    assert dataset_fingerprint(root) != before
