"""Decode-once cache: built once, reused, rebuilt when a file changes, same pixels as the classic path."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resomap.data import cache
from resomap.data.batch_augment import normalize
from resomap.data.datamodule import ImageFolderDataModule, eval_transform
from resomap.data.io import load_rgb

SIZE = 40


@pytest.fixture
def data_root(tiny_data_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny data set, free to modify."""
    return Path(shutil.copytree(tiny_data_root, tmp_path / "data"))


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths the cache builder decodes (the real decoder, observed)."""
    seen: list[str] = []
    lock = threading.Lock()

    def observed(path):
        with lock:
            seen.append(str(path))
        return load_rgb(path)

    monkeypatch.setattr(cache, "load_rgb", observed)
    return seen


def _cached_datamodule(root: Path, cache_dir: Path) -> ImageFolderDataModule:
    datamodule = ImageFolderDataModule(str(root), image_size=SIZE, batch_size=8, num_workers=0,
                                       pipeline="cached", cache_dir=str(cache_dir))
    datamodule.setup("fit")
    return datamodule


def _cache_files(cache_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in cache_dir.rglob("*.npy")}


def test_cache_is_built_once_then_reused(data_root: Path, tmp_path: Path, decodes: list[str]):
    first = _cached_datamodule(data_root, tmp_path / "cache")
    n_images = sum(len(first.datasets[split]) for split in ("train", "val", "test"))
    assert len(decodes) == n_images
    files = _cache_files(tmp_path / "cache")
    assert len(files) == 6  # images and labels of three splits

    second = _cached_datamodule(data_root, tmp_path / "cache")
    assert len(decodes) == n_images  # nothing decoded again
    assert _cache_files(tmp_path / "cache") == files
    assert torch.equal(second.cached["train"].labels, torch.tensor(first.datasets["train"].targets))


def test_cache_is_rebuilt_when_a_file_changes(data_root: Path, tmp_path: Path, decodes: list[str]):
    first = _cached_datamodule(data_root, tmp_path / "cache")
    path, _ = first.datasets["train"].samples[0]
    old_pixels = np.array(first.cached["train"].images[0])
    decoded_before = len(decodes)

    Image.new("RGB", (96, 72), (10, 200, 30)).save(path, quality=95)
    second = _cached_datamodule(data_root, tmp_path / "cache")
    rebuilt = decodes[decoded_before:]
    assert path in rebuilt
    new_pixels = np.array(second.cached["train"].images[0])
    assert not np.array_equal(old_pixels, new_pixels)
    assert abs(int(new_pixels[1].mean()) - 200) <= 2


def test_cached_pixels_equal_the_classic_resize(data_root: Path, tmp_path: Path):
    datamodule = _cached_datamodule(data_root, tmp_path / "cache")
    classic = eval_transform(SIZE)
    for split in ("train", "test"):
        dataset, cached = datamodule.datasets[split], datamodule.cached[split]
        for index in (0, len(dataset) // 2, len(dataset) - 1):
            path, label = dataset.samples[index]
            images, labels = cached.__getitems__([index])
            assert int(labels[0]) == label
            expected = classic(load_rgb(path))
            assert torch.allclose(normalize(images)[0], expected, atol=1e-6)


def test_concurrent_builders_share_one_build(data_root: Path, tmp_path: Path, decodes: list[str]):
    datamodule = ImageFolderDataModule(str(data_root), image_size=SIZE, num_workers=0)
    datamodule.setup("fit")
    samples = datamodule.datasets["train"].samples

    def build(_: int):
        return cache.load_or_build(samples, SIZE, tmp_path / "cache", "tiny", "fp", "train", workers=2)

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(build, range(3)))
    assert len(decodes) == len(samples)
    for images, labels in outcomes:
        assert np.array_equal(images, outcomes[0][0]) and np.array_equal(labels, outcomes[0][1])
    assert not list((tmp_path / "cache").rglob(".building-*"))


def test_cached_loader_gives_uint8_batches_normalised_after_transfer(data_root: Path, tmp_path: Path):
    datamodule = _cached_datamodule(data_root, tmp_path / "cache")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.shape == (8, 3, SIZE, SIZE) and images.dtype == torch.uint8
    normalised, same_labels = datamodule.on_after_batch_transfer((images, labels), 0)
    assert normalised.dtype == torch.float32 and torch.equal(same_labels, labels)
    assert torch.allclose(normalised, normalize(images))


def test_cached_pipeline_needs_a_cache_dir(data_root: Path):
    with pytest.raises(ValueError, match="data.cache_dir"):
        ImageFolderDataModule(str(data_root), image_size=SIZE, pipeline="cached")
    with pytest.raises(ValueError, match="data.pipeline='fast'"):
        ImageFolderDataModule(str(data_root), image_size=SIZE, pipeline="fast")
