"""The report of a demo-sized sweep: under 2 MB, its table of contents linked, its confusion
matrices one figure, its explanations those of the classes resolution changes most.

The inputs are the demo's shape (2 models x 5 resolutions, 600x450 photographs, every run
explained with the default's methods and image count) written the way runs write them, so the
size measured here is the size a user gets.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from test_report_cases import CLASSES, build, labels_of, make_record, probabilities

from resomap.callbacks.explain import select_sample
from resomap.data.synthetic import generate
from resomap.measure.maps import explanation_dir, map_key, resample
from resomap.run import record as records
from resomap.run.record_write import write_record
from resomap.study.agreement import explained_runs
from resomap.study.grid_sections import auroc_ranges, choose_classes
from resomap.study.report import write_report

# One xdist worker runs this file, so its module fixtures are built once (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("report_size")

MODELS, RESOLUTIONS = ("simple_cnn", "tiny_cnn"), (224, 256, 320, 384, 512)
METHODS = ("grad_cam", "integrated_gradients", "saliency")
LIMIT = 2_000_000
BKL = CLASSES.index("bkl")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo-sized photographs (600x450 JPEGs) with lesion masks: the overlays' real content."""
    return generate(tmp_path_factory.mktemp("data") / "synthetic", n_train=7, n_val=7, n_test=28,
                    width=600, height=450, seed=0, workers=1)


def _maps(count: int, size: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """Maps like each method's: Grad-CAM smooth, gradients speckled (the worst case to compress)."""
    if method == "grad_cam":
        return resample(rng.random((count, 7, 7)).astype(np.float32), size)
    return rng.random((count, size, size)).astype(np.float32) ** 4


def explain_run(results_dir: Path, record: records.RunRecord, data_root: Path, num_images: int = 4,
                classes: list[str] | None = None) -> None:
    """Give ``record`` an explain section and maps file as the callback writes them."""
    test = sorted((str(path), CLASSES.index(path.parent.name))
                  for path in (data_root / "test").glob("*/*.jpg"))
    labels = None if classes is None else [CLASSES.index(name) for name in classes]
    sample = select_sample(test, data_root, num_images, seed=0, labels=labels)
    rng = np.random.default_rng(record.resolution)
    arrays: dict[str, np.ndarray] = {"images": np.array([path for path, _ in sample]),
                                     "labels": np.array([label for _, label in sample]),
                                     "predicted": np.array([label for _, label in sample]),
                                     "classes": np.array(CLASSES)}
    for method in METHODS:
        for target in ("label", "predicted"):
            maps = _maps(len(sample), record.resolution, method, rng)
            arrays[map_key(method, target)] = maps.astype(np.float16)
    folder = explanation_dir(results_dir, record.run_name)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "maps.npz", **arrays)
    section = {"maps_file": "maps.npz", "data_root": str(data_root), "image_size": record.resolution,
               "classes": classes,
               "images": [{"image": path, "label": CLASSES[label], "predicted": CLASSES[label]}
                          for path, label in sample],
               "methods": {method: {"sanity_spearman": 0.1, "sanity_abs_spearman": 0.3}
                           for method in METHODS}}
    write_record(results_dir, dataclasses.replace(record, explain=section))


def demo_sweep(results_dir: Path, data_root: Path, classes: list[str] | None = None) -> Path:
    """The demo's 10 runs, each explained; mel's AUROC grows with resolution (test_report_cases)."""
    for model in MODELS:
        for res in RESOLUTIONS:
            explain_run(results_dir, make_record(results_dir, model, res), data_root, classes=classes)
    return results_dir


def test_demo_report_is_under_2_mb_with_a_linked_table_of_contents(tmp_path: Path, photos: Path):
    results_dir = demo_sweep(tmp_path, photos)
    write_report(build(results_dir), strict=True)
    page = (results_dir / "report.html").read_text()
    size = (results_dir / "report.html").stat().st_size
    print(f"report.html: {size} bytes")
    assert size < LIMIT, f"report.html is {size / 1e6:.2f} MB"
    contents = page.split("<strong>Contents</strong>", 1)[1].split("<h2", 1)[0]
    targets = re.findall(r'href="#([^"]+)"', contents)
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert len(targets) >= 10 and len(set(targets)) == len(targets)
    assert [target for target in targets if target not in ids] == []
    assert "explanations-across-resolutions" in targets and "confusion-matrices" in targets


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_confusion_matrices_of_several_runs_are_one_figure(tmp_path: Path):
    for model in MODELS:
        for res in (224, 320):
            make_record(tmp_path, model, res)
    make_record(tmp_path, "tiny_cnn", 224, seed=1)
    write_report(build(tmp_path), strict=True)
    section = _section((tmp_path / "report.md").read_text(), "Confusion matrices")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    assert linked == ["plots/confusion_matrices.png"]
    assert (tmp_path / linked[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in (tmp_path / "plots").glob("confusion*")) == ["confusion_matrices.png"]


def _bkl_changes_most(labels: np.ndarray, resolution: int, seed: int) -> np.ndarray:
    """Every class as easy at every resolution but bkl, ranked at chance at 224 px and well at 512."""
    probs = probabilities(labels, resolution, seed, mel_skill=1.0)
    blur = 1 - (resolution - 224) / 288  # 1 at 224 px, 0 at 512 px
    is_bkl = labels == BKL
    probs[is_bkl] = (1 - blur) * probs[is_bkl] + blur * np.random.default_rng(resolution).dirichlet(
        np.ones(len(CLASSES)), int(is_bkl.sum()))
    return probs


@pytest.mark.parametrize("changes_most", ["mel", "bkl"])
def test_explanations_show_the_class_whose_auroc_changes_most(tmp_path: Path, photos: Path,
                                                              changes_most: str):
    labels = labels_of()
    for res in (224, 320, 512):
        probs = _bkl_changes_most(labels, res, 0) if changes_most == "bkl" else None  # default: mel
        explain_run(tmp_path, make_record(tmp_path, "tiny_cnn", res, probs=probs), photos)
    study = build(tmp_path)
    ranges = auroc_ranges(study, "synthetic", "tiny_cnn")
    spread = {name: high - low for name, (low, high) in ranges.items()}
    assert max(spread, key=spread.get) == changes_most
    write_report(study, strict=True)
    section = _section((tmp_path / "report.md").read_text(), "Explanations across resolutions")
    shown = re.search(r"tiny\\_cnn: shown: (\w+) and (\w+), whose AUROC changes most", section)
    assert shown and shown.group(1) == changes_most, section
    low, high = ranges[changes_most]
    assert f"{changes_most} {low:.2f}-{high:.2f}" in section
    assert "(plots/attribution_tiny_cnn.jpg)" in section
    assert (tmp_path / "plots" / "attribution_tiny_cnn.jpg").is_file()
    # The figure shows one image of each shown class: what the chooser gives the figure.
    key, loaded = next(iter(explained_runs(tmp_path).items()))
    classes, _ = choose_classes(study, key, loaded)
    assert classes == [shown.group(1), shown.group(2)]


def test_explanations_show_the_classes_the_config_names(tmp_path: Path, photos: Path):
    for res in (224, 512):
        explain_run(tmp_path, make_record(tmp_path, "tiny_cnn", res), photos, classes=["vasc", "df"])
    write_report(build(tmp_path), strict=True)
    section = _section((tmp_path / "report.md").read_text(), "Explanations across resolutions")
    assert "tiny\\_cnn: shown: vasc and df, named by `callbacks.explain.classes`" in section
    assert "mel" not in section.split("tiny\\_cnn: shown:", 1)[1]


def test_a_report_over_the_bound_is_warned_with_its_largest_figures(tmp_path: Path, monkeypatch, caplog):
    from resomap.study import report as report_module

    for res in (224, 512):
        make_record(tmp_path, "tiny_cnn", res)
    monkeypatch.setattr(report_module, "HTML_LIMIT", 50_000)
    with caplog.at_level("WARNING", logger="resomap.study.report"):
        write_report(build(tmp_path), strict=True)
    warned = [record.getMessage() for record in caplog.records if "MB, over the" in record.getMessage()]
    assert len(warned) == 1 and "confusion_matrices.png" in warned[0] and "report.html" in warned[0]
