"""The data fingerprint covers the images' bytes, follows symlinks, skips hidden files, and
costs no file read when nothing changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from resomap.data import datamodule
from resomap.data.datamodule import dataset_fingerprint


@pytest.fixture
def data(tiny_data_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    datamodule._CONTENT_HASHES.clear()
    return root


def _images(root: Path) -> list[Path]:
    return sorted((root / "train").rglob("*.jpg"))


def test_same_size_edits_of_the_images_change_the_fingerprint(data: Path, tmp_path: Path):
    cache = tmp_path / "cache" / "fingerprint.json"
    before = dataset_fingerprint(data, cache)
    for image in _images(data):
        content = bytearray(image.read_bytes())
        content[-3] ^= 0xFF  # same size, other bytes
        image.write_bytes(bytes(content))
    assert dataset_fingerprint(data, cache) != before


def test_symlinked_split_folders_are_followed(data: Path, tmp_path: Path):
    linked = tmp_path / "linked"
    linked.mkdir()
    for split in ("train", "val", "test"):
        (linked / split).symlink_to(data / split, target_is_directory=True)
    assert dataset_fingerprint(linked) == dataset_fingerprint(data)
    before = dataset_fingerprint(linked)
    image = _images(data)[0]
    image.write_bytes(image.read_bytes()[::-1])
    assert dataset_fingerprint(linked) != before


def test_hidden_and_os_files_are_left_out(data: Path):
    before = dataset_fingerprint(data)
    image = _images(data)[0]
    (image.parent / f"._{image.name}").write_bytes(b"macOS resource fork")
    (data / "train" / "__MACOSX").mkdir()
    (data / "train" / "__MACOSX" / image.name).write_bytes(image.read_bytes())
    assert dataset_fingerprint(data) == before


def test_an_unchanged_set_costs_no_file_read(data: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache" / "fingerprint.json"
    before = dataset_fingerprint(data, cache)
    datamodule._CONTENT_HASHES.clear()  # a new process: only the cache file is left

    def no_read(*args, **kwargs):
        raise AssertionError(f"read {args[0]}")

    monkeypatch.setattr(datamodule, "open", no_read, raising=False)
    assert dataset_fingerprint(data, cache) == before
    # Only a changed image is read again.
    image = _images(data)[0]
    image.write_bytes(image.read_bytes() + b"\0")
    read = []
    monkeypatch.setattr(datamodule, "open", lambda path, mode: read.append(Path(path)) or open(path, mode),
                        raising=False)
    assert dataset_fingerprint(data, cache) != before
    assert read == [image]
