"""The sweep's report end to end: a real 2 models x 2 resolutions sweep, then its files.

The sweep's end builds the report in production mode: a section that failed would be listed at
the report's end and fail the command, so these tests also prove that no section fails on a
real sweep.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_module, tiny_overrides

from resomap.study.blocks import esc
from resomap.study.results_table import SEED_COLUMNS

# One xdist worker runs this file, so its module fixtures are built once (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report")]

MODELS, RESOLUTIONS = ("simple_cnn", "tiny_cnn"), (32, 48)
# Cheap runs: no tracking server, no explanations, a short latency measurement.
FAST = ["logger=csv", "explain=none", "callbacks.profile.warmup_runs=1", "callbacks.profile.timed_runs=2"]
SEED_SEVEN = ("num_experiments", "avg_test_accuracy", "best_test_accuracy", "worst_test_accuracy",
              "avg_test_f1", "avg_inference_time_sec", "avg_throughput_samples_sec")
PLOTS = ("balanced_accuracy_vs_resolution", "macro_auroc_vs_resolution", "f1_vs_resolution",
         "auroc_by_class_simple_cnn", "auroc_by_class_tiny_cnn", "latency_vs_resolution",
         "throughput_vs_resolution", "memory_vs_resolution", "macs_vs_resolution",
         "accuracy_vs_cost_pareto", "cross_res_simple_cnn", "cross_res_tiny_cnn",
         *[f"training_cost_{axis}_{model}" for axis in ("macs", "seconds") for model in MODELS])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, tiny_data_root: Path) -> Path:
    """A second seed of one pair, then the 2 x 2 multirun whose end writes the report of its own
    four runs (kept as ``sweep_summary.json``), then ``resomap report`` over the whole folder."""
    root = tmp_path_factory.mktemp("sweep")
    base = [*tiny_overrides(root, tiny_data_root), *FAST]
    extra = run_module("resomap.train", [*base, "model=tiny_cnn", "res=32", "seed=1"], cwd=root)
    assert extra.returncode == 0, extra.stderr[-3000:]
    completed = run_module("resomap.train", ["-m", *base, "model=" + ",".join(MODELS),
                                             "res=" + ",".join(map(str, RESOLUTIONS))], cwd=root)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = root / "results"
    shutil.copy(results / "results_summary.json", root / "sweep_summary.json")
    rebuilt = run_module("resomap.report", [f"results_dir={results}", f"paths.root_dir={root}"], cwd=root)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    return results


def test_the_end_of_a_sweep_reports_its_own_runs(sweep: Path):
    own = json.loads((sweep.parent / "sweep_summary.json").read_text())
    assert own["total_experiments"] == 4  # the earlier seed-1 run is not this sweep's
    assert {(r["model"], r["resolution"]) for r in own["top_5_results"]} == {
        (m, r) for m in MODELS for r in RESOLUTIONS}


def _rows(results_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(results_dir / "all_results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_csv_has_one_row_per_run_and_the_seed_columns_first(sweep: Path):
    columns, rows = _rows(sweep)
    assert tuple(columns[:18]) == SEED_COLUMNS
    assert columns[18] == "seed"
    for extra in ("test_balanced_accuracy", "test_macro_auroc", "test_per_class_auroc_mel",
                  "test_per_class_average_precision_nv", "profile_median_time_sec", "complexity_macs"):
        assert extra in columns
    assert {row["metrics_source"] for row in rows} == {"predictions"}
    runs = sorted((row["model"], int(row["resolution"]), int(row["seed"])) for row in rows)
    expected = sorted([(m, r, 0) for m in MODELS for r in RESOLUTIONS] + [("tiny_cnn", 32, 1)])
    assert runs == expected


def test_summary_keeps_the_seed_keys_and_its_best_matches_the_csv(sweep: Path):
    summary = json.loads((sweep / "results_summary.json").read_text())
    _, rows = _rows(sweep)
    assert summary["total_experiments"] == len(rows) == 5
    assert summary["models"] == list(MODELS) and summary["resolutions"] == list(RESOLUTIONS)
    statistics = summary["statistics"]
    for group in (*statistics["by_model"].values(), *statistics["by_resolution"].values()):
        assert all(key in group for key in SEED_SEVEN)
    best_csv = max(float(row["test_balanced_accuracy"]) for row in rows)
    top = summary["top_5_results"][0]
    assert top["test_balanced_accuracy"] == pytest.approx(best_csv)
    assert any(row["model"] == top["model"] and int(row["resolution"]) == top["resolution"]
               and float(row["test_balanced_accuracy"]) == pytest.approx(best_csv) for row in rows)
    study = summary["data_sets"]["synthetic"]
    pairs = {(p["model"], p["resolution"]): p for p in study["by_model_resolution"]}
    two_seeds = pairs[("tiny_cnn", 32)]["balanced_accuracy"]
    assert (two_seeds["method"], two_seeds["seeds"]) == ("bootstrap (seeds, images)", 2)
    assert two_seeds["ci_low"] <= two_seeds["ci_high"]
    assert pairs[("simple_cnn", 48)]["macro_auroc"]["method"] == "bootstrap (images)"
    assert set(pairs[("simple_cnn", 48)]["per_class_auroc"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv",
                                                                 "vasc"}
    for model in MODELS:
        recommendation = study["recommendations"][model]
        assert recommendation["recommended_resolution"] in recommendation["non_inferior"]
        assert recommendation["statement"]
        assert study["cost_scaling"][model]["macs"]["k"] == pytest.approx(2, abs=0.5)
        assert {budget["axis"] for budget in study["equal_training_cost"][model]} == {"macs", "seconds"}


def test_detailed_report_keeps_the_seed_layout(sweep: Path):
    text = (sweep / "detailed_report.txt").read_text()
    headings = ["TOP 10 BEST RESULTS", "RESULTS BY MODEL", "RESULTS BY RESOLUTION", "DETAILED RESULTS TABLE",
                "End of Report"]
    positions = [text.index(heading) for heading in headings]
    assert positions == sorted(positions)
    assert "Ranked by: test balanced accuracy" in text
    # Every model's and resolution's block names the metric (not the model of a recommendation).
    blocks = text.split("RESULTS BY MODEL", 1)[1].split("DETAILED RESULTS TABLE", 1)[0]
    assert blocks.count("  Average balanced accuracy: ") == blocks.count("  Experiments: ") > 1


def test_report_answers_per_model_and_names_data_and_machine(sweep: Path):
    markdown = (sweep / "report.md").read_text()
    answer = markdown.split("## Answer", 1)[1].split("\n## ", 1)[0]
    for model in MODELS:
        assert re.search(rf"\| {re.escape(esc(model))} \| \*\*(32|48)\*\* \|", answer)
    assert "How the resolution is chosen" in answer
    result = json.loads((sweep / "test_results" / "tiny_cnn_32.json").read_text())
    assert result["device"] in markdown and f"torch {result['versions']['torch']}" in markdown
    assert "Class balance" in markdown and "nv" in markdown
    assert "Cost scaling" in markdown and "Train resolution x test resolution" in markdown
    assert "Per-class AUROC" in markdown and "Accuracy at equal training cost" in markdown
    assert "Sections that failed" not in markdown and "Incomplete" not in markdown


def test_every_plot_exists_as_a_png(sweep: Path):
    markdown = (sweep / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", markdown)
    expected = [f"plots/{name}.png" for name in PLOTS]
    expected.append("plots/confusion_matrices.png")  # every run's matrix in one figure
    assert sorted(linked) == sorted(expected)
    for name in linked:
        data = (sweep / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), name


def test_cross_resolution_evaluations_are_cached(sweep: Path):
    for model in MODELS:
        for res in RESOLUTIONS:
            cached = json.loads((sweep / "cross_res" / f"{model}_{res}.json").read_text())
            other = next(r for r in RESOLUTIONS if r != res)
            evaluation = cached["evaluations"][str(other)]
            assert 0 <= evaluation["balanced_accuracy"] <= 1 and evaluation["num_images"] == 21


def test_html_is_self_contained(sweep: Path):
    page = (sweep / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert not re.search(r"https?://", page)
    images = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    markdown_images = re.findall(r"!\[", (sweep / "report.md").read_text())
    assert len(images) == len(markdown_images) > 0
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in images)
    assert page.count("<table>") >= 5


def test_report_command_on_a_copied_folder_lists_a_corrupt_file(sweep: Path, tmp_path: Path):
    copied = tmp_path / "elsewhere" / "results"
    shutil.copytree(sweep, copied)
    before = {path.name: path.stat().st_mtime_ns for path in (copied / "cross_res").iterdir()}
    (copied / "test_results" / "broken.json").write_text("{not json")
    (copied / "test_results" / "other.json").write_text(json.dumps({"model": "x"}))
    completed = run_module("resomap.report", [f"results_dir={copied}"], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    assert "broken.json" in output and "Testing" not in output  # cached: nothing re-evaluated
    assert {path.name: path.stat().st_mtime_ns for path in (copied / "cross_res").iterdir()} == before
    summary = json.loads((copied / "results_summary.json").read_text())
    invalid = "\n".join(summary["invalid_files"])
    assert "broken.json" in invalid and "not readable JSON" in invalid
    assert "other.json" in invalid and "not a ResoMap run record" in invalid
    assert "broken.json" in (copied / "report.md").read_text()
    assert summary["total_experiments"] == 5
    assert not (tmp_path / "outputs").exists()  # the report writes only into its results folder


def test_report_command_takes_the_metric_and_margin_and_refuses_a_bad_one(sweep: Path, tmp_path: Path):
    copied = tmp_path / "results"
    shutil.copytree(sweep, copied)
    args = [f"results_dir={copied}", "evaluate_cross_res=false"]
    completed = run_module("resomap.report", [*args, "report.metric=macro_auroc", "report.margin=0.05"],
                           cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    markdown = (copied / "report.md").read_text()
    assert "Recommendation metric: macro AUROC (`report.metric=macro_auroc`), non-inferiority margin 0.05" \
        in markdown
    assert json.loads((copied / "results_summary.json").read_text())["ranking_metric"] == "test_macro_auroc"
    refused = run_module("resomap.report", [*args, "report.metric=auc"], cwd=tmp_path)
    assert refused.returncode == 2
    assert "report.metric='auc' is not valid: choose one of balanced_accuracy, macro_auroc" in refused.stderr


def test_report_command_without_results_says_what_it_expects(tmp_path: Path):
    completed = run_module("resomap.report", [f"results_dir={tmp_path / 'empty'}"], cwd=tmp_path)
    assert completed.returncode == 2
    assert "No result files in" in completed.stderr and "results_dir=PATH" in completed.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium_with_its_tables_and_images(sweep: Path, tmp_path: Path):
    # A copy with a script that records, once the page has loaded, how many images decoded.
    probe = ("<script>window.addEventListener('load', () => {const images = [...document.images];"
             "document.body.dataset.imagesTotal = images.length;"
             "document.body.dataset.imagesLoaded ="
             " images.filter(i => i.complete && i.naturalWidth > 0).length;"
             "document.body.dataset.tables = document.querySelectorAll('table').length;});</script>")
    page = tmp_path / "report.html"
    page.write_text((sweep / "report.html").read_text().replace("</body>", probe + "</body>"))
    completed = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", completed.stdout)
    assert body, completed.stderr[-2000:]
    attributes = dict(re.findall(r'data-([a-z-]+)="(\d+)"', body.group(0)))
    assert int(attributes["images-total"]) == len(list((sweep / "plots").glob("*.png")))
    assert attributes["images-loaded"] == attributes["images-total"]
    assert int(attributes["tables"]) >= 5
    assert "Answer: the resolution to use for each model" in completed.stdout
