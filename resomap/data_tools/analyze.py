"""Know a data set before sweeping it: class balance, image sizes, cross-split duplicates.

Writes the seed study's ``analysis/`` files: ``dataset_analysis.json`` (per split: class
counts, total, image statistics; plus percentages, image modes and duplicate files),
``dataset_summary.txt``, ``class_distribution.png`` and ``split_comparison.png``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

from resomap.data.io import open_image
from resomap.data_tools.prepare import class_files, find_split_folders
from resomap.errors import ResoMapError
from resomap.io import atomic_write_bytes, atomic_write_text, figure_png, write_json

log = logging.getLogger(__name__)

UNSPLIT = "all"


class AnalyzeError(ResoMapError, ValueError):
    """The folder to analyse is not a data set; the message says what was expected."""


def dataset_splits(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{split: {class: images}}`` for ``root/{train,val,test}/<class>``, or one ``all`` split
    when ``root`` holds class folders directly (a folder not yet prepared)."""
    if not root.is_dir():
        raise AnalyzeError(f"root={root} is not a folder; give a data set root holding "
                           "{train,val,test}/<class>/<images> or <class>/<images>.")
    splits = find_split_folders(root)
    found = ({split: class_files(folder) for split, folder in splits.items()} if splits is not None
             else {UNSPLIT: class_files(root)})
    if not any(files for classes in found.values() for files in classes.values()):
        raise AnalyzeError(f"No images under {root}; expected {root}/{{train,val,test}}/<class>/<images> "
                           f"or {root}/<class>/<images>.")
    return found


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "max": float(array.max()), "mean": float(array.mean()),
            "std": float(array.std())}


def image_stats(files: Mapping[str, list[Path]], sample_per_class: int | None,
                seed: int) -> dict[str, Any]:
    """Width, height and aspect ratio statistics, modes and formats of a per-class sample.

    Only headers are read (PIL opens lazily), so a sample of a few hundred images is fast.
    """
    widths, heights, modes, formats, unreadable = [], [], Counter(), Counter(), []
    samples: list[Path] = []
    for name, paths in sorted(files.items()):
        sample = list(paths)
        if sample_per_class is not None and len(sample) > sample_per_class:
            sample = random.Random(f"{seed}/{name}").sample(sample, sample_per_class)
        samples += sample
    for path in tqdm(samples, unit="img", desc="Reading image headers", mininterval=1.0):
        try:
            with open_image(path) as image:
                widths.append(image.width)
                heights.append(image.height)
                modes[image.mode] += 1
                formats[image.format or "unknown"] += 1
        except (OSError, UnidentifiedImageError):
            unreadable.append(str(path))
    stats: dict[str, Any] = {"num_samples": len(widths)}
    if widths:
        stats.update(width=_stats(widths), height=_stats(heights),
                     aspect_ratio=_stats([w / h for w, h in zip(widths, heights)]))
    stats.update(modes=dict(sorted(modes.items())), formats=dict(sorted(formats.items())),
                 unreadable=unreadable)
    return stats


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cross_split_duplicates(splits: Mapping[str, Mapping[str, list[Path]]],
                           root: Path) -> list[dict[str, Any]]:
    """Groups of byte-identical files found in more than one split (test-set leakage).

    Files are first grouped by size and only sizes shared across splits are hashed, so a
    data set without duplicates costs one ``stat`` per file.
    """
    by_size: dict[int, list[tuple[str, Path]]] = defaultdict(list)
    for split, classes in splits.items():
        for paths in classes.values():
            for path in paths:
                by_size[path.stat().st_size].append((split, path))
    by_hash: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    candidates = [entry for entries in by_size.values() if len({split for split, _ in entries}) > 1
                  for entry in entries]
    for split, path in tqdm(candidates, unit="file", desc="Hashing files of equal size", mininterval=1.0):
        by_hash[_digest(path)].append((split, path))
    groups = []
    for digest, entries in sorted(by_hash.items()):
        if len({split for split, _ in entries}) > 1:
            groups.append({"sha256": digest, "size_bytes": entries[0][1].stat().st_size,
                           "splits": sorted({split for split, _ in entries}),
                           "files": sorted(str(path.relative_to(root)) for _, path in entries)})
    return groups


def analyze_dataset(root: str | os.PathLike, sample_per_class: int | None = 50, seed: int = 0,
                    check_duplicates: bool = True) -> dict[str, Any]:
    """The analysis as a JSON-ready dict: one entry per split in the seed's schema, plus extras."""
    root = Path(root).expanduser()
    splits = dataset_splits(root)
    classes = sorted({name for split in splits.values() for name in split})
    report: dict[str, Any] = {}
    for split, files in splits.items():
        counts = {name: len(files.get(name, [])) for name in classes}
        total = sum(counts.values())
        report[split] = {
            "class_counts": counts,
            "total_images": total,
            "num_classes": sum(1 for count in counts.values() if count),
            "class_percentages": {name: 100.0 * count / total if total else 0.0
                                  for name, count in counts.items()},
            "image_stats": image_stats(files, sample_per_class, seed),
        }
    report["classes"] = classes
    report["root"] = str(root.resolve())
    report["generated_at"] = datetime.now().isoformat()
    if check_duplicates and len(splits) > 1:
        groups = cross_split_duplicates(splits, root)
        report["cross_split_duplicates"] = {"num_groups": len(groups),
                                            "num_files": sum(len(group["files"]) for group in groups),
                                            "groups": groups}
    return report


def split_names(report: Mapping[str, Any]) -> list[str]:
    return [key for key, value in report.items() if isinstance(value, dict) and "class_counts" in value]


def summary_text(report: Mapping[str, Any]) -> str:
    """The seed's ``dataset_summary.txt`` (per split: total and a class table), then the extras."""
    classes = report["classes"]
    lines = ["ResoMap Dataset Analysis Summary", "=" * 60, "",
             f"Number of classes: {len(classes)}", f"Classes: {', '.join(classes)}", ""]
    for split in split_names(report):
        entry = report[split]
        rows = [(name, str(entry["class_counts"][name]), f"{entry['class_percentages'][name]:.2f}%")
                for name in classes]
        widths = [max(len("Class"), *(len(row[0]) for row in rows)),
                  max(len("Count"), *(len(row[1]) for row in rows)) + 1,
                  max(len("Percentage"), *(len(row[2]) for row in rows))]
        table = [("Class", "Count", "Percentage"), *rows]
        lines += [f"{split.upper()} Split", "-" * 60, f"Total images: {entry['total_images']:,}", ""]
        lines += [" ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in table]
        lines.append("")
    lines += ["IMAGE STATISTICS (sample per split)", "-" * 60]
    for split in split_names(report):
        stats = report[split]["image_stats"]
        if not stats["num_samples"]:
            lines.append(f"{split}: no readable images")
            continue
        width, height, ratio = stats["width"], stats["height"], stats["aspect_ratio"]
        modes = ", ".join(f"{mode} {count}" for mode, count in stats["modes"].items())
        lines.append(f"{split}: {stats['num_samples']} images; width {width['min']:.0f}-{width['max']:.0f} "
                     f"(mean {width['mean']:.0f}), height {height['min']:.0f}-{height['max']:.0f} "
                     f"(mean {height['mean']:.0f}), aspect ratio {ratio['min']:.3f}-{ratio['max']:.3f}; "
                     f"modes: {modes}")
        if stats["unreadable"]:
            lines.append(f"  unreadable: {len(stats['unreadable'])} files, e.g. {stats['unreadable'][0]}")
    lines.append("")
    duplicates = report.get("cross_split_duplicates")
    if duplicates is not None:
        lines += ["CROSS-SPLIT DUPLICATES", "-" * 60]
        if duplicates["num_groups"]:
            lines.append(f"WARNING: {duplicates['num_groups']} distinct image(s) appear in more than one "
                         f"split ({duplicates['num_files']} files); evaluation on them measures memory, "
                         "not generalisation. Remove the copies from val/test:")
            lines += [f"  {' = '.join(group['files'])}" for group in duplicates["groups"]]
        else:
            lines.append("None: no file appears in more than one split.")
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_figures(report: Mapping[str, Any]) -> dict[str, bytes]:
    """``class_distribution.png`` (counts per class, one panel per split) and
    ``split_comparison.png`` (class shares side by side: are the splits alike?)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, splits = report["classes"], split_names(report)
    positions = np.arange(len(classes))
    figure, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4), squeeze=False)
    for axis, split in zip(axes[0], splits):
        counts = [report[split]["class_counts"][name] for name in classes]
        bars = axis.bar(positions, counts, color="tab:blue")
        axis.bar_label(bars, fontsize=8)
        axis.set_xticks(positions, classes, rotation=45, ha="right")
        axis.set_title(f"{split} ({report[split]['total_images']:,} images)")
        axis.set_ylabel("images")
    figure.suptitle("Class distribution")
    figure.tight_layout()
    images = {"class_distribution.png": figure_png(figure, dpi=120, bbox_inches="tight")}
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(classes)), 4))
    width = 0.8 / len(splits)
    for index, split in enumerate(splits):
        shares = [report[split]["class_percentages"][name] for name in classes]
        axis.bar(positions + (index - (len(splits) - 1) / 2) * width, shares, width, label=split)
    axis.set_xticks(positions, classes, rotation=45, ha="right")
    axis.set_ylabel("% of split")
    axis.set_title("Class share per split")
    axis.legend()
    figure.tight_layout()
    images["split_comparison.png"] = figure_png(figure, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return images


def write_analysis(report: Mapping[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write the JSON, the text summary and the two figures into ``output_dir``."""
    output_dir = Path(output_dir).expanduser()
    write_json(output_dir / "dataset_analysis.json", dict(report))
    atomic_write_text(output_dir / "dataset_summary.txt", summary_text(report))
    for name, data in plot_figures(report).items():
        atomic_write_bytes(output_dir / name, data)
    return output_dir
