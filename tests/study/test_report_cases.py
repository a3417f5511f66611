"""The report from hand-made run records: every section, in edge cases, with ISIC-grade metrics.

Records are real ``RunRecord`` files and prediction ``.npz`` files written by
``resomap.run.record``'s writers into a temporary results folder; the report is built with
``strict=True``, so any section that cannot be built fails the test.
"""

from __future__ import annotations

import ast
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from resomap.errors import ResoMapError
from resomap.run.identity import RunIdentity
from resomap.run.record_files import predictions_path
from resomap.run.record_schema import DataInfo, RunRecord, TestMetrics
from resomap.run.record_write import write_predictions, write_record
from resomap.study import report as report_module
from resomap.study.aggregate import write_aggregates
from resomap.study.decision_settings import Settings, check_settings
from resomap.study.failures import FAILED_TITLE, ReportIncomplete
from resomap.study.report import write_report
from resomap.study.study import build_study

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MEL, NV = CLASSES.index("mel"), CLASSES.index("nv")
COUNTS = [6, 8, 10, 4, 16, 40, 6]  # 90 test images, imbalanced like the demo
FAST = Settings(n_resamples=400)
SECTIONS = ["Answer: the resolution to use for each model", "Degenerate runs", "What the answer cost",
            "Data set and machine", "Accuracy by resolution",
            "Per-class AUROC and average precision", "Accuracy at equal training cost", "Cost by resolution",
            "Where the time went", "Accuracy against cost", "Train resolution x test resolution",
            "Confusion matrices"]


def labels_of(counts: list[int] = COUNTS) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def probabilities(labels: np.ndarray, resolution: int, seed: int,
                  mel_skill: float | None = None) -> np.ndarray:
    """Class probabilities with a built-in resolution effect: every class is easy, but ``mel``
    looks like ``nv`` at low resolution (its score separates from nv's as resolution grows)."""
    rng = np.random.default_rng([resolution, seed])
    logits = rng.normal(0, 1, (labels.size, len(CLASSES)))
    logits[np.arange(labels.size), labels] += 2.5
    skill = mel_skill if mel_skill is not None else min(1.0, (resolution - 192) / 256)
    is_mel = labels == MEL
    logits[is_mel, MEL] -= 2.5 * (1 - skill)  # at low resolution mel is scored like nv
    logits[is_mel, NV] += 2.5 * (1 - skill)
    logits[:, MEL] += 2.0 * skill * (is_mel.astype(float) - 0.5)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def history(resolution: int, epochs: int = 4, images: int = 196) -> list[dict]:
    """Per-epoch rows: larger inputs learn more per epoch but cost (res/224)^2 as much."""
    cost = 2.0 * (resolution / 224) ** 2
    rows = []
    for epoch in range(epochs):
        rows.append({"epoch": epoch, "val_balanced_accuracy": min(0.95, (0.3 + 0.12 * (epoch + 1)) *
                                                                  (1 + (resolution - 224) / 1000)),
                     "train_epoch_time": cost, "train_time_sec": cost * (epoch + 1), "train_images": images})
    return rows


def make_record(results_dir: Path, model: str, resolution: int, seed: int = 0, data_name: str = "synthetic",
                probs: np.ndarray | None = None, labels: np.ndarray | None = None, profiling: bool = True,
                metrics: dict | None = None, save_predictions: bool = True, hist: bool = True) -> RunRecord:
    """Write one run's record (and, unless told not to, its predictions) the way a run does."""
    labels = labels_of() if labels is None else labels
    probs = probabilities(labels, resolution, seed) if probs is None else probs
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    recall = {name: float(np.mean(predicted[labels == i] == i)) for i, name in enumerate(CLASSES)}
    values = {"loss": 0.9, "accuracy": float(np.mean(predicted == labels)), "precision": 0.5, "recall": 0.5,
              "f1_score": 0.5, "balanced_accuracy": float(np.mean(list(recall.values())))}
    values.update(metrics or {})
    identity = RunIdentity(model, resolution, seed, data_name, f"fp-{data_name}", "hash0")
    macs = 1e9 * (resolution / 224) ** 2
    record = RunRecord(
        identity=identity, timestamp=f"2025-01-01T00:00:{resolution % 60:02d}", classes=CLASSES,
        test_metrics=TestMetrics(per_class_recall=recall, confusion_matrix=confusion.tolist(),
                                 num_images=int(labels.size), **values),
        data=DataInfo(data_name, f"/data/{data_name}", f"fp-{data_name}",
                      {"train": [c * 2 for c in COUNTS], "test": COUNTS}),
        device="cpu-test", accelerator="cpu", precision="bf16-mixed", versions={"torch": "2.x"},
        history=history(resolution) if hist else [],
        profiling={"median_time_sec": 0.01 * (resolution / 224) ** 1.5, "avg_time_sec": 0.011,
                   "throughput_samples_sec": 3200 / (resolution / 224) ** 1.5,
                   "peak_cpu_memory_mb": 400 + resolution} if profiling else {},
        complexity={"macs": macs, "params_total": 1_000_000} if profiling else {},
        timing={"total_sec": 10.0, "fit_sec": 8.0, "setup_sec": 1.0, "test_sec": 0.5})
    if save_predictions:
        write_predictions(predictions_path(results_dir, record.run_name), labels, probs)
    write_record(results_dir, record)
    return record


def build(results_dir: Path, settings: Settings = FAST):
    return build_study(results_dir, evaluate_cross_res=False, settings=settings)


def sections_of(markdown: str) -> list[str]:
    return [line[3:] for line in markdown.splitlines() if line.startswith("## ")]


def strict_report(results_dir: Path, settings: Settings = FAST) -> str:
    study = build(results_dir, settings)
    output = write_report(study, strict=True)
    assert output.failures == []
    markdown = (results_dir / "report.md").read_text()
    assert FAILED_TITLE not in markdown
    return markdown


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Two models x three resolutions, one seed each."""
    for model in ("simple_cnn", "tiny_cnn"):
        for res in (224, 320, 512):
            make_record(tmp_path, model, res)
    return tmp_path


def test_metrics_equal_scikit_learn_on_the_stored_predictions(sweep: Path):
    study = build(sweep)
    (data,) = study.data_sets.values()
    for run in data.runs:
        with np.load(predictions_path(sweep, run.record.run_name)) as saved:
            labels, predicted, probs = saved["labels"], saved["predictions"], saved["probabilities"]
        onehot = label_binarize(labels, classes=range(len(CLASSES)))
        expected = roc_auc_score(onehot, probs.astype(np.float64), average=None)
        assert [run.per_class_auroc[name] for name in CLASSES] == pytest.approx(expected.tolist(), abs=1e-12)
        assert run.metrics["macro_auroc"] == pytest.approx(roc_auc_score(onehot, probs.astype(np.float64)))
        assert run.metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    write_aggregates(sweep, evaluate_cross_res=False, n_resamples=400, strict=True)
    with open(sweep / "all_results.csv", newline="") as handle:
        rows = {row["run_name"]: row for row in csv.DictReader(handle)}
    for run in data.runs:
        row = rows[run.record.run_name]
        assert float(row["test_macro_auroc"]) == pytest.approx(run.metrics["macro_auroc"])
        assert float(row["test_per_class_auroc_mel"]) == pytest.approx(run.per_class_auroc["mel"])
        assert float(row["test_per_class_average_precision_nv"]) == pytest.approx(
            run.per_class_average_precision["nv"])
        assert row["metrics_source"] == "predictions"
    markdown = (sweep / "report.md").read_text()
    mel_224 = data.groups[("simple_cnn", 224)].per_class_auroc["mel"]
    assert f"{mel_224:.3f}" in markdown.split("## Per-class AUROC", 1)[1]


def test_one_seed_report_has_every_section_and_plot(sweep: Path):
    markdown = strict_report(sweep)
    assert sections_of(markdown) == SECTIONS
    for name in ("balanced_accuracy_vs_resolution", "macro_auroc_vs_resolution", "f1_vs_resolution",
                 "auroc_by_class_simple_cnn", "training_cost_macs_simple_cnn",
                 "training_cost_seconds_tiny_cnn",
                 "latency_vs_resolution", "accuracy_vs_cost_pareto", "confusion_matrices"):
        path = sweep / "plots" / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(plots/{name}.png)" in markdown
    assert "bootstrap (images)" in markdown and "Recommendation metric: balanced accuracy" in markdown
    assert "| Run | setup (s) | fit (s) | test (s) | total (s) |" in markdown
    html = (sweep / "report.html").read_text()
    assert html.count("<img ") == markdown.count("![")


def test_the_report_build_logs_each_section_as_it_starts(sweep: Path, caplog):
    with caplog.at_level("INFO", logger="resomap.study.report"):
        markdown = strict_report(sweep)
    started = [record.getMessage() for record in caplog.records
               if record.getMessage().startswith("Report section ")]
    total = int(started[0].split("/")[1].split(":")[0])
    assert [int(line.split()[2].split("/")[0]) for line in started] == list(range(1, total + 1))
    assert total >= len(sections_of(markdown))  # a builder may return no section
    assert any(": confusion of " in line for line in started)


def test_the_resolution_effect_shows_in_mel_auroc(sweep: Path):
    study = build(sweep, Settings(n_resamples=1000))
    found = study.data_sets["synthetic"].extremes["simple_cnn"]
    assert (found.low_resolution, found.high_resolution) == (224, 512)
    mel = found.differences["AUROC mel"]
    assert mel.difference > 0 and mel.low > 0  # excludes zero: the built-in effect is found
    assert found.pvalues_holm["AUROC mel"] < 0.05


def test_several_seeds_resample_seeds_then_images(tmp_path: Path):
    for seed in (0, 1, 2):
        for res in (224, 512):
            make_record(tmp_path, "simple_cnn", res, seed=seed)
    markdown = strict_report(tmp_path)
    data = build(tmp_path).data_sets["synthetic"]
    group = data.groups[("simple_cnn", 512)]
    assert group.seeds == [0, 1, 2]
    interval = group.intervals["balanced_accuracy"]
    assert interval.method == "bootstrap (seeds, images)" and interval.n == 3
    seed_values = [run.metrics["balanced_accuracy"] for run in group.runs]
    assert interval.mean == pytest.approx(np.mean(seed_values))
    comparison = next(iter(data.comparisons.values()))
    assert comparison.seeds == (0, 1, 2) and comparison.paired.n_seeds == 3
    assert "bootstrap (seeds, images)" in markdown


def test_a_single_resolution_is_answered_plainly(tmp_path: Path):
    make_record(tmp_path, "simple_cnn", 224)
    markdown = strict_report(tmp_path)
    assert "Only 224 px was run for simple\\_cnn" in markdown
    assert "| simple\\_cnn | **224** | **not a decision** | 1 |" in markdown


def test_missing_profiling_and_history_are_said_not_hidden(tmp_path: Path):
    for res in (224, 384):
        make_record(tmp_path, "tiny_cnn", res, profiling=False, hist=False)
    markdown = strict_report(tmp_path)
    assert "Not measured in these results: latency, throughput, memory, macs" in markdown
    assert "No latency or multiply-adds in these results" in markdown
    assert "Accuracy at equal training cost" in markdown and "Not available: no run's history" in markdown


def test_nan_metrics_and_missing_predictions_do_not_break_the_report(tmp_path: Path):
    labels = labels_of()
    diverged = np.full((labels.size, len(CLASSES)), np.nan)
    make_record(tmp_path, "simple_cnn", 224, probs=diverged, metrics={"balanced_accuracy": math.nan})
    make_record(tmp_path, "simple_cnn", 320, save_predictions=False, metrics={"balanced_accuracy": math.nan})
    make_record(tmp_path, "simple_cnn", 512)
    markdown = strict_report(tmp_path)
    data = build(tmp_path).data_sets["synthetic"]
    assert data.groups[("simple_cnn", 224)].value("macro_auroc") != data.groups[("simple_cnn", 224)].value(
        "macro_auroc")  # NaN: no AUROC from non-finite probabilities
    assert math.isnan(data.groups[("simple_cnn", 320)].value("balanced_accuracy"))
    assert data.comparisons[("simple_cnn", 320)].status == "not paired"
    assert "not finite" in markdown and "no stored test predictions" in markdown
    assert data.recommendations["simple_cnn"].resolution is not None


def test_intervals_that_exclude_their_estimate_are_drawn_from_their_ends(sweep: Path):
    study = build(sweep)
    group = study.data_sets["synthetic"].groups[("simple_cnn", 320)]
    estimate = group.intervals["balanced_accuracy"]
    group.intervals["balanced_accuracy"] = type(estimate)(estimate.mean, estimate.mean + 0.01,
                                                          estimate.mean + 0.05, 0.01, 1, "bootstrap (images)")
    output = write_report(study, strict=True)
    assert output.failures == []
    assert (sweep / "plots" / "balanced_accuracy_vs_resolution.png").stat().st_size > 1000
    expected = f"{estimate.mean:.3f} [{estimate.mean + 0.01:.3f}, {estimate.mean + 0.05:.3f}]"
    assert expected in (sweep / "report.md").read_text()


def test_two_data_sets_are_studied_apart(tmp_path: Path):
    for res in (224, 512):
        make_record(tmp_path, "simple_cnn", res)
        reversed_effect = probabilities(labels_of(), 700 - res, 5)
        make_record(tmp_path, "simple_cnn", res, data_name="isic", probs=reversed_effect)
    study = build(tmp_path)
    assert sorted(study.data_sets) == ["isic", "synthetic"]
    for data in study.data_sets.values():
        assert {run.record.identity.data_name for run in data.runs} == {data.name}
        assert len(data.runs) == 2
    assert study.data_sets["synthetic"].recommendations["simple_cnn"].best_resolution == 512
    assert study.data_sets["isic"].recommendations["simple_cnn"].best_resolution == 224
    markdown = strict_report(tmp_path)
    assert "## Answer: the resolution to use for each model (isic)" in markdown
    assert "## Answer: the resolution to use for each model (synthetic)" in markdown
    assert (tmp_path / "plots" / "isic" / "balanced_accuracy_vs_resolution.png").is_file()


def _confident(labels: np.ndarray, wrong: dict[int, range]) -> np.ndarray:
    """Confident probabilities, right except on the given images of each class (called mel, or nv for mel)."""
    probs = np.full((labels.size, len(CLASSES)), 0.02)
    probs[np.arange(labels.size), labels] = 0.88
    for cls, rows in wrong.items():
        chosen = np.flatnonzero(labels == cls)[list(rows)]
        other = NV if cls == MEL else MEL
        probs[chosen, cls], probs[chosen, other] = 0.02, 0.88
    return probs


def _pair_with_known_difference(tmp_path: Path, counts: list[int], wrong_224: dict[int, range],
                                wrong_512: dict[int, range]) -> float:
    """Write 224 and 512 px runs of simple_cnn wrong on the given images, two seeds that agree
    (no training variance); returns the known balanced-accuracy difference (224 minus 512)."""
    labels = labels_of(counts)
    for seed in (0, 1):
        for res, wrong in ((512, wrong_512), (224, wrong_224)):
            make_record(tmp_path, "simple_cnn", res, seed=seed, labels=labels,
                        probs=_confident(labels, wrong))
    misses = {cls: len(wrong_224.get(cls, ())) - len(wrong_512.get(cls, ())) for cls in range(len(counts))}
    return -sum(miss / counts[cls] for cls, miss in misses.items()) / len(counts)


def test_non_inferiority_is_decided_on_a_known_difference(tmp_path: Path):
    counts = [60] * 7  # 224 px misses 6 nv images more than 512 px: -6/60/7 = -0.0143
    known = _pair_with_known_difference(tmp_path, counts, {NV: range(6)}, {})
    decided = build(tmp_path, Settings(margin=0.03, n_resamples=1000)).data_sets["synthetic"]
    comparison = decided.comparisons[("simple_cnn", 224)]
    assert comparison.paired.difference == pytest.approx(known)
    assert comparison.paired.low > -0.03 and comparison.status == "non-inferior"
    assert decided.recommendations["simple_cnn"].resolution == 224
    shown_worse = build(tmp_path, Settings(margin=0.0, n_resamples=1000)).data_sets["synthetic"]
    assert shown_worse.comparisons[("simple_cnn", 224)].status == "inferior"
    assert shown_worse.recommendations["simple_cnn"].resolution == 512


def test_too_few_test_images_are_said_with_the_width_and_the_images_needed(tmp_path: Path):
    # Both resolutions miss images, different ones: a small difference, a wide paired interval.
    known = _pair_with_known_difference(tmp_path, COUNTS, {NV: range(10), MEL: range(4)},
                                        {NV: range(10, 18), MEL: range(4, 8)})
    settings = Settings(margin=0.02, n_resamples=1000)
    data = build(tmp_path, settings).data_sets["synthetic"]
    comparison = data.comparisons[("simple_cnn", 224)]
    assert comparison.paired.difference == pytest.approx(known) and comparison.status == "undecided"
    half, distance = comparison.paired.width / 2, abs(comparison.paired.difference + 0.02)
    # 80 % power at the one-sided level 0.025, seeds agreeing (no seed variance): the image
    # variance must shrink to (distance / (z_0.975 + z_0.8))^2, i.e. the test set grow by its ratio.
    z = 1.959963984540054 + 0.8416212335729143
    expected = math.ceil(90 * comparison.paired.image_variance / (distance / z) ** 2)
    assert comparison.decisive_images == expected
    assert expected > math.ceil(90 * (half / distance) ** 2)  # more than the old 50 %-power figure
    statement = data.recommendations["simple_cnn"].statement
    assert statement.startswith("Not decided: 512 px has the highest balanced accuracy")
    assert f"about {comparison.decisive_images} test images" in statement
    assert statement in strict_report(tmp_path, settings)


def test_equal_training_cost_names_the_best_resolution_per_budget(sweep: Path):
    data = build(sweep).data_sets["synthetic"]
    macs = {b.reference: b for b in data.budgets["simple_cnn"] if b.axis == "macs"}
    # At the 224 px schedule's cost 512 px has not finished one epoch and 320 px one, so 224 px
    # (four epochs) wins; at the 512 px schedule's cost every run finished and 512 px wins.
    assert macs[224].reached[512] is None and macs[224].best == 224
    assert macs[512].best == 512
    assert macs[224].budget == pytest.approx(3 * 1e9 * 196 * 4)
    markdown = strict_report(sweep)
    assert "224 px full schedule" in markdown and "3 x forward MACs" in markdown


def test_a_failing_section_is_listed_and_fails_the_command_but_costs_nothing_else(sweep: Path, monkeypatch):
    def broken(study, data):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(report_module, "DATA_SECTIONS", [*report_module.DATA_SECTIONS[:2], broken,
                                                         *report_module.DATA_SECTIONS[2:]])
    with pytest.raises(ReportIncomplete) as raised:
        write_aggregates(sweep, evaluate_cross_res=False, n_resamples=200)
    assert [failure.section for failure in raised.value.failures] == ["broken"]
    assert "yerr" in str(raised.value) and "report.html" in str(raised.value)
    markdown = (sweep / "report.md").read_text()
    titles = sections_of(markdown)
    assert titles[-1] == FAILED_TITLE and "Accuracy by resolution" in titles
    assert "`broken` (data set synthetic): ValueError: 'yerr' must not contain negative values" in markdown
    assert "**Incomplete: 1 section(s) failed" in markdown
    assert json.loads((sweep / "results_summary.json").read_text())["total_experiments"] == 6
    with pytest.raises(ValueError, match="yerr"):
        write_report(build(sweep), strict=True)


def test_macro_auroc_can_drive_the_recommendation(sweep: Path):
    markdown = strict_report(sweep, Settings(metric="macro_auroc", n_resamples=400))
    assert "Recommendation metric: macro AUROC (`report.metric=macro_auroc`)" in markdown
    assert "**Each resolution against the best, on macro AUROC**" in markdown


@pytest.mark.parametrize(("key", "value", "message"), [
    ("metric", "auc", "report.metric='auc' is not valid: choose one of balanced_accuracy, macro_auroc"),
    ("margin", -0.1, "report.margin=-0.1 is not valid"),
    ("margin", "2%", "report.margin='2%' is not valid"),
])
def test_bad_settings_name_the_key(key: str, value, message: str):
    with pytest.raises(ResoMapError, match=message.replace("(", r"\(")):
        check_settings(**{key: value})


# What the after-the-sweep package may import from ResoMap: records, files, settings, map scores,
# and the training stack only through the one loader of trained models, run.trained.
STUDY_MAY_IMPORT = ("resomap.study", "resomap.io", "resomap.errors", "resomap.config", "resomap.device",
                    "resomap.names", "resomap.run.record", "resomap.run.identity", "resomap.run.trained",
                    "resomap.measure.maps", "resomap.data.io")
TRAINING_STACK = ("lightning", "pytorch_lightning", "captum")


def _imports(path: Path) -> list[list[str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
    return found


def test_the_report_reaches_the_training_stack_only_through_the_loader():
    package = Path(__file__).resolve().parents[2] / "resomap" / "study"
    todo, seen = ["aggregate", "report"], set()
    while todo:
        name = todo.pop()
        if name in seen or not (package / f"{name}.py").is_file():
            continue
        seen.add(name)
        for names in _imports(package / f"{name}.py"):
            module = names[0]
            assert not module.startswith(TRAINING_STACK), f"study/{name}.py imports {module}"
            if module.startswith("resomap"):
                allowed = any(item.startswith(STUDY_MAY_IMPORT) for item in names)
                assert allowed, f"study/{name}.py imports {module}"
            todo += [item.split(".")[2] for item in names if item.startswith("resomap.study.")]
    assert {"aggregate", "report", "study", "scores", "bootstrap", "classic_stats", "decide", "plots",
            "agreement", "cross_res"} <= seen
