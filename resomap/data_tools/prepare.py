"""Turn a folder of images into the ``root/{train,val,test}/<class>/`` layout the trainer reads.

A folder that already has train/val/test sub-folders keeps its split; a folder of class
sub-folders gets a stratified, seeded split. Files are linked or copied into a staging
folder that is renamed into place, so an interrupted run never leaves half a data set,
and an existing data set is only replaced when asked to.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from resomap.data.io import image_files, is_image_file, visible_folders
from resomap.errors import ResoMapError
from resomap.io import write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
LINK_MODES = ("symlink", "hardlink", "copy")
MANIFEST = "prepare.json"
# Folder names other data sets use for the three splits, matched case-insensitively.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}


class PrepareError(ResoMapError, ValueError):
    """Bad input for ``prepare``: the message says what was wrong and what would be valid."""


def is_image(path: Path) -> bool:
    """A visible file with an image extension (never ``.DS_Store``, ``._x.jpg``, ``Thumbs.db``)."""
    return is_image_file(path)


def _images_under(folder: Path) -> list[Path]:
    """Every image below ``folder`` (sub-folders too, as torchvision's ImageFolder reads them), sorted;
    nothing inside a hidden or OS folder (``.thumbnails/``, ``__MACOSX/``): the one listing."""
    return image_files(folder)


def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders: hidden and OS folders (``.git``, ``__MACOSX``) are never classes or splits."""
    return visible_folders(folder)


def find_split_folders(folder: Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., "test": ...}`` when ``folder`` holds all three splits, else None."""
    by_name = {path.name.lower(): path for path in _subfolders(folder)}
    found = {}
    for split, aliases in SPLIT_ALIASES.items():
        match = next((by_name[alias] for alias in aliases if alias in by_name), None)
        if match is not None:
            found[split] = match
    if not found:
        return None
    if len(found) < len(SPLITS):
        missing = [split for split in SPLITS if split not in found]
        raise PrepareError(
            f"{folder} has split folders {sorted(p.name for p in found.values())} but none for "
            f"{missing} (accepted names: {dict(SPLIT_ALIASES)}). Add the missing split, or move all "
            "images into one folder per class so that prepare splits them."
        )
    return found


def class_files(folder: Path) -> dict[str, list[Path]]:
    """Images of each class sub-folder of ``folder``; classes without images are kept (empty)."""
    return {path.name: _images_under(path) for path in _subfolders(folder)}


def locate_dataset(folder: Path, max_depth: int = 3) -> Path:
    """The folder at or below ``folder`` that holds split folders or class folders of images.

    Downloaded archives often wrap the data in one or two extra folders; the shallowest
    folder with split folders wins, else the shallowest with at least two class folders.
    """
    level = [folder]
    class_candidate = None
    for _ in range(max_depth + 1):
        for candidate in level:
            if find_split_folders(candidate) is not None:
                return candidate
            if class_candidate is None:
                classes = class_files(candidate)
                if sum(1 for files in classes.values() if files) >= 2:
                    class_candidate = candidate
        level = [sub for candidate in level for sub in _subfolders(candidate)]
    if class_candidate is not None:
        return class_candidate
    raise PrepareError(
        f"No images in a usable layout under {folder}: expected either "
        f"{folder}/<class>/<images> (to be split) or {folder}/{{train,val,test}}/<class>/<images>."
    )


def check_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    values = {split: float(ratios.get(split, -1)) for split in SPLITS}
    if set(ratios) != set(SPLITS) or any(value <= 0 for value in values.values()) \
            or not math.isclose(sum(values.values()), 1.0, abs_tol=1e-6):
        raise PrepareError(
            f"ratios={dict(ratios)} is not valid: give a positive share for each of train, val and "
            "test summing to 1, e.g. ratios.train=0.7 ratios.val=0.15 ratios.test=0.15."
        )
    return values


def split_sizes(n_images: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """Images per split for one class: largest-remainder rounding, at least one per split.

    Each count is the floor or ceiling of ``n_images * ratio`` (within one image), except that
    a class of three or more images always puts at least one image in every split.
    """
    exact = {split: n_images * ratios[split] for split in SPLITS}
    sizes = {split: math.floor(value) for split, value in exact.items()}
    by_remainder = sorted(SPLITS, key=lambda split: (sizes[split] - exact[split], SPLITS.index(split)))
    for split in by_remainder[: n_images - sum(sizes.values())]:
        sizes[split] += 1
    if n_images >= len(SPLITS):
        for split in SPLITS:
            if sizes[split] == 0:
                sizes[max(SPLITS, key=lambda other: sizes[other])] -= 1
                sizes[split] = 1
    return sizes


def stratified_split(files: Mapping[str, list[Path]], ratios: Mapping[str, float],
                     seed: int) -> dict[str, dict[str, list[Path]]]:
    """Assign each class's images to train/val/test: same input and seed, same split."""
    too_small = {name: len(paths) for name, paths in files.items() if len(paths) < len(SPLITS)}
    if too_small:
        raise PrepareError(
            f"Classes {too_small} have fewer than {len(SPLITS)} images, so they cannot appear in "
            "train, val and test (the trainer needs every class in every split). Add images to "
            "them or move those class folders out of the input."
        )
    split: dict[str, dict[str, list[Path]]] = {name: {} for name in SPLITS}
    for name, paths in sorted(files.items()):
        order = sorted(paths)
        # Seeded per class, so adding a class never reshuffles the others.
        random.Random(f"{seed}/{name}").shuffle(order)
        start = 0
        for split_name, size in split_sizes(len(order), ratios).items():
            split[split_name][name] = sorted(order[start:start + size])
            start += size
    return split


def check_classes(plan: Mapping[str, Mapping[str, list]], dataset: Path) -> list[str]:
    """The class names, checked to have images in every split (what the trainer requires)."""
    classes = sorted({name for split in plan.values() for name in split})
    empty = [f"{split}/{name}" for split in SPLITS for name in classes if not plan[split].get(name)]
    if empty:
        raise PrepareError(
            f"{dataset}: no images for {empty}; the trainer needs every class in train, val and test. "
            "Add images there, or remove the class from every split."
        )
    return classes


def _place(source: Path, target: Path, mode: str) -> str:
    """Link or copy ``source`` to ``target``; returns the mode used (hardlink falls back to copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        target.symlink_to(source.resolve())
        return mode
    if mode == "hardlink":
        try:
            os.link(source.resolve(), target)
            return mode
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    shutil.copy2(source, target)
    return "copy"


def write_layout(plan: Mapping[str, Mapping[str, list[tuple[Path, Path]]]], staging: Path,
                 mode: str) -> str:
    """Place ``(source, path relative to the class folder)`` pairs under ``staging/split/class``."""
    used = set()
    for split, classes in plan.items():
        for name, pairs in classes.items():
            (staging / split / name).mkdir(parents=True, exist_ok=True)
            for source, relative in pairs:
                used.add(_place(source, staging / split / name / relative, mode))
    if mode == "hardlink" and "copy" in used:
        log.warning("Hard links are not possible between the input and the output folder "
                    "(another file system); the images were copied instead.")
    return "copy" if used == {"copy"} else mode


def _check_output(output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise PrepareError(f"output_dir={output_dir} is a file; give a folder path.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise PrepareError(
            f"{output_dir} already exists and is not empty; prepare never replaces a data set "
            "unless asked: add overwrite=true to replace it, or choose another output_dir=..."
        )


@contextmanager
def staged_output(output_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A staging folder beside ``output_dir`` that replaces it only if the block succeeds."""
    _check_output(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-staging-", dir=output_dir.parent))
    try:
        yield staging
        _check_output(output_dir, overwrite)
        retired = None
        if output_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-old-", dir=output_dir.parent))
            output_dir.rename(retired / output_dir.name)
        try:
            staging.rename(output_dir)
        except OSError:
            if retired is not None:
                (retired / output_dir.name).rename(output_dir)
            raise
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def prepare_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   ratios: Mapping[str, float], seed: int = 0, link: str = "symlink",
                   overwrite: bool = False, source: str = "folder") -> Path:
    """Write the trainer's layout for the images in ``input_dir`` into ``output_dir``.

    Split folders already present are kept as they are; otherwise each class is split
    with :func:`stratified_split`. A ``prepare.json`` manifest records what was done.
    """
    input_dir, output_dir = Path(input_dir).expanduser(), Path(output_dir).expanduser()
    if not input_dir.is_dir():
        raise PrepareError(f"input_dir={input_dir} is not a folder; give the folder holding one "
                           "sub-folder of images per class (or train/val/test folders).")
    if link not in LINK_MODES:
        raise PrepareError(f"link={link!r} is not valid; use one of {list(LINK_MODES)}.")
    source_root, target_root = input_dir.resolve(), output_dir.resolve()
    if source_root == target_root or source_root in target_root.parents or target_root in source_root.parents:
        raise PrepareError(f"output_dir={output_dir} and input_dir={input_dir} overlap; write the "
                           "prepared data set to a folder that neither contains nor lies in the input.")
    ratios = check_ratios(ratios)
    _check_output(output_dir, overwrite)
    dataset = locate_dataset(input_dir)
    splits = find_split_folders(dataset)
    if splits is not None:
        log.info("%s already has train/val/test folders: keeping its split.", dataset)
        plan = {split: {name: [(path, path.relative_to(folder / name)) for path in paths]
                        for name, paths in class_files(folder).items()}
                for split, folder in splits.items()}
        split_kind = "kept"
    else:
        files = class_files(dataset)
        log.info("Splitting %d images of %d classes in %s (seed %d, ratios %s).",
                 sum(map(len, files.values())), len(files), dataset, seed, ratios)
        assigned = stratified_split(files, ratios, seed)
        plan = {split: {name: [(path, path.relative_to(dataset / name)) for path in paths]
                        for name, paths in classes.items()}
                for split, classes in assigned.items()}
        split_kind = "stratified"
    classes = check_classes(plan, dataset)
    counts = {split: {name: len(plan[split][name]) for name in classes} for split in SPLITS}
    with staged_output(output_dir, overwrite) as staging:
        used_mode = write_layout(plan, staging, link)
        write_json(staging / MANIFEST, {
            "created_at": datetime.now().isoformat(), "source": source, "input_dir": str(dataset.resolve()),
            "split": split_kind, "seed": seed if split_kind == "stratified" else None,
            "ratios": ratios if split_kind == "stratified" else None, "link": used_mode,
            "classes": classes, "counts": counts,
            "files": {split: {name: [str(relative) for _, relative in plan[split][name]] for name in classes}
                      for split in SPLITS},
        })
    log.info("Prepared %s: %s", output_dir,
             ", ".join(f"{split} {sum(counts[split].values())}" for split in SPLITS))
    return output_dir


def prepare_synthetic(output_dir: str | os.PathLike, n_train: int, n_val: int, n_test: int,
                      width: int, height: int, seed: int = 0, overwrite: bool = False,
                      workers: int | None = None) -> Path:
    """The embedded synthetic set at any size, e.g. seed-scale for benchmarking data loading."""
    from resomap.data.synthetic import MARKER, generate

    output_dir = Path(output_dir).expanduser()
    spec = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "width": width, "height": height,
            "seed": seed}
    if min(n_train, n_val, n_test) < 14 or min(width, height) < 16:
        raise PrepareError(f"Synthetic set {spec} is too small: use n_train, n_val, n_test >= 14 "
                           "(two images per class) and width, height >= 16.")
    marker = output_dir / MARKER
    same = marker.is_file() and all(json.loads(marker.read_text()).get(key) == value
                                    for key, value in spec.items())
    if same:
        log.info("%s already holds this synthetic set.", output_dir)
        return output_dir
    with staged_output(output_dir, overwrite) as staging:
        generate(staging / "data", workers=workers, **spec)
        for item in (staging / "data").iterdir():
            item.rename(staging / item.name)
        (staging / "data").rmdir()
    return output_dir


def prepare_kaggle(output_dir: str | os.PathLike, dataset: str, ratios: Mapping[str, float],
                   seed: int = 0, link: str = "symlink", overwrite: bool = False,
                   timeout: float = 10.0) -> Path:
    """Download ``dataset`` with kagglehub (credentials and network checked first), then lay it out."""
    from resomap.data_tools import kaggle

    _check_output(Path(output_dir).expanduser(), overwrite)
    downloaded = kaggle.download(dataset, timeout=timeout)
    return prepare_folder(downloaded, output_dir, ratios, seed=seed, link=link, overwrite=overwrite,
                          source=f"kaggle:{dataset}")

