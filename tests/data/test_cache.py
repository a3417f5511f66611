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
from resomap.data.device_batches import DeviceBatches
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
    assert not list((tmp_path / "cache").rglob(".*.tmp"))  # no temporary file left behind


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


@pytest.fixture
def no_resident():
    """The process-wide registry of resident splits, empty before and after the test."""
    cache.release()
    yield
    cache.release()


def test_one_decode_pass_fills_every_size(data_root: Path, tmp_path: Path, decodes: list[str]):
    datamodule = ImageFolderDataModule(str(data_root), image_size=SIZE, num_workers=0)
    datamodule.setup("fit")
    samples = datamodule.datasets["train"].samples
    decodes.clear()
    images, _ = cache.load_or_build(samples, SIZE, tmp_path / "many", "tiny", "fp", "train",
                                    extra_sizes=[24, SIZE, 16])
    assert len(decodes) == len(samples)  # each image decoded once for three sizes
    small, labels = cache.load_or_build(samples, 24, tmp_path / "many", "tiny", "fp", "train")
    assert len(decodes) == len(samples)  # the extra size was built in that pass
    alone, alone_labels = cache.load_or_build(samples, 24, tmp_path / "alone", "tiny", "fp", "train")
    assert np.array_equal(small, alone) and np.array_equal(labels, alone_labels)
    assert images.shape == (len(samples), 3, SIZE, SIZE) and small.shape[-1] == 24


def test_a_memory_map_moves_to_a_device_in_chunks_without_change(data_root: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    datamodule = _cached_datamodule(data_root, tmp_path / "cache")
    mapped = datamodule.cached["train"].images
    monkeypatch.setattr(cache, "CHUNK_BYTES", 5 * 3 * SIZE * SIZE)  # 5 images a chunk, last one short
    copied = cache.copy_in_chunks(mapped, "cpu")  # the path an accelerator takes, on the CPU
    assert len(mapped) % 5 and torch.equal(copied, torch.from_numpy(np.array(mapped)))


def test_device_batches_cover_each_image_once_per_epoch_in_a_new_order():
    split = cache.CachedSplit(torch.zeros(23, 3, 4, 4, dtype=torch.uint8), torch.arange(23))
    batches = DeviceBatches(split, batch_size=5, shuffle=True, seed=1)
    assert len(batches) == 5
    epochs = [torch.cat([labels for _, labels in batches]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(23))
    assert not torch.equal(epochs[0], epochs[1])
    in_order = torch.cat([labels for _, labels in DeviceBatches(split, 5, shuffle=False)])
    assert torch.equal(in_order, torch.arange(23))

    ranks = [DeviceBatches(split, 5, shuffle=True, seed=1, rank=rank, world_size=2) for rank in (0, 1)]
    shards = [torch.cat([labels for _, labels in batches]) for batches in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 3 and len(shards[0]) == len(shards[1]) == 12
    assert set(torch.cat(shards).tolist()) == set(range(23))  # one image repeated to even the ranks


def test_resident_splits_are_reused_and_freed_on_a_new_resolution(data_root: Path, tmp_path: Path,
                                                                 no_resident):
    def loader(size: int) -> DeviceBatches:
        datamodule = ImageFolderDataModule(str(data_root), image_size=size, batch_size=8, num_workers=0,
                                           pipeline="cached", cache_dir=str(tmp_path / "cache"),
                                           device_cache="true")
        datamodule.setup("fit")
        found = datamodule.train_dataloader()
        assert isinstance(found, DeviceBatches)
        return found

    first, second = loader(SIZE), loader(SIZE)
    assert second.split.images is first.split.images  # the next job at this resolution reuses it
    assert cache.resident_bytes("cpu") == first.split.nbytes
    assert first.split.images.shape == (len(first.split), 3, SIZE, SIZE)
    other = loader(24)
    assert cache.resident_bytes("cpu") == other.split.nbytes  # the 40 px split was freed


def test_cpu_workers_augment_once_and_the_transfer_leaves_it(data_root: Path, tmp_path: Path):
    datamodule = ImageFolderDataModule(str(data_root), image_size=SIZE, batch_size=8, num_workers=1,
                                       pipeline="cached", cache_dir=str(tmp_path / "cache"), rotation=0.0,
                                       color_jitter=(0.0, 0.0, 0.0, 0.0), horizontal_flip=1.0,
                                       vertical_flip=0.0)
    datamodule.setup("fit")
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.float32  # augmented and normalised in the worker
    flipped = normalize(torch.from_numpy(np.array(datamodule.cached["train"].images)).flip(-1))
    for image in images:  # every image is the normalised mirror image of one in the cache
        assert torch.isclose(flipped, image, atol=1e-5).flatten(1).all(1).any()
    ready, same_labels = datamodule.prepare_batch((images, labels), training=True)
    assert ready is images and same_labels is labels  # not augmented (flipped back) a second time


def test_setup_checks_the_images_once_per_process(data_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    from resomap.data import validate

    checked: list[str] = []
    monkeypatch.setattr(validate, "load_rgb", lambda path: checked.append(str(path)) or load_rgb(path))
    for size in (SIZE, 24):  # e.g. the train x test matrix: the same data at another resolution
        ImageFolderDataModule(str(data_root), image_size=size, num_workers=0).setup("test")
    assert len(checked) == len(set(checked)) == sum(1 for _ in data_root.rglob("*.jpg")
                                                     if "masks" not in _.parts)


def test_fit_trains_from_resident_batches(data_root: Path, tmp_path: Path, no_resident):
    import lightning.pytorch as pl

    from resomap.models.classifier import LitClassifier
    from resomap.models.simple import TinyCNN

    datamodule = ImageFolderDataModule(str(data_root), image_size=32, batch_size=8, num_workers=0,
                                       pipeline="cached", cache_dir=str(tmp_path / "cache"),
                                       device_cache="true")
    datamodule.setup("fit")
    module = LitClassifier(TinyCNN(num_classes=7), num_classes=7, class_names=datamodule.classes,
                           optimizer=lambda params: torch.optim.SGD(params, lr=0.01))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1)
    trainer.fit(module, datamodule=datamodule)
    assert isinstance(trainer.train_dataloader, DeviceBatches)
    assert trainer.num_training_batches == -(-len(datamodule.cached["train"]) // 8)
    assert trainer.global_step == 2 * trainer.num_training_batches
