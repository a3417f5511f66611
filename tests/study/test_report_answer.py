"""The report's answer: no decision from one seed, what more seeds cost, degenerate runs flagged,
record-derived text escaped, a table of contents first. Hand-made records (real files)."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import test_report_cases
from markdown_it import MarkdownIt
from test_report_cases import CLASSES, COUNTS, NV, build, labels_of, make_record, strict_report

from resomap.run.record_write import write_record
from resomap.study.aggregate import write_aggregates
from resomap.study.blocks import esc
from resomap.study.decision_settings import Settings
from resomap.study.decision_text import ONE_RUN
from resomap.study.render import anchors


def test_one_seed_states_no_decision_and_what_more_seeds_cost(tmp_path: Path):
    for res in (224, 320, 512):
        make_record(tmp_path, "simple_cnn", res)  # each run's timing.total_sec is 10 s
    markdown = strict_report(tmp_path)
    rec = build(tmp_path).data_sets["synthetic"].recommendations["simple_cnn"]
    assert not rec.decided and rec.decision.one_run
    assert ONE_RUN in rec.statement and "not a decision" in markdown
    # A second seed at the three resolutions: 3 runs at 10 s each, from the records' timings.
    assert "2 seeds at 224 px, 320 px, 512 px take 3 more runs, about 30 s" in markdown
    assert "| simple\\_cnn | **512** | **not a decision** | 1 |" in markdown
    assert "slight" not in markdown
    write_aggregates(tmp_path, evaluate_cross_res=False, n_resamples=200, strict=True)
    summary = json.loads((tmp_path / "results_summary.json").read_text())
    answer = summary["data_sets"]["synthetic"]["recommendations"]["simple_cnn"]
    assert answer["decided"] is False
    assert answer["more_seeds"] == {"resolutions": [224, 320, 512], "seeds": 2, "runs": 3, "seconds": 30.0}
    assert answer["cost"]["runs"] == 3 and answer["cost"]["seconds"] == 30.0 and answer["cost"]["k"] == 1


def test_two_agreeing_seeds_with_a_clear_effect_are_a_decision_with_its_cost(tmp_path: Path):
    for seed in (0, 1, 2):
        for res in (224, 512):
            make_record(tmp_path, "simple_cnn", res, seed=seed)
    make_record(tmp_path, "simple_cnn", 320, seed=0)
    study = build(tmp_path, Settings(n_resamples=400))
    rec = study.data_sets["synthetic"].recommendations["simple_cnn"]
    decision = rec.decision
    assert decision.best == 512 and decision.verdicts[224].difference.n_seeds == 3
    # 320 px has one seed: its comparison cannot be decided, so neither can the answer.
    assert decision.verdicts[320].status == "undecided" and not rec.decided
    markdown = strict_report(tmp_path, Settings(n_resamples=400))
    # The cost table: 7 runs of 10 s; the full 3-seed grid is 9 runs, 2 saved.
    row = ("| simple\\_cnn | 7 | 1.2 min | cpu: cpu-test | 224: 3, 320: 1, 512: 3 | 3 | 9 runs, about "
           "1.5 min | 2 |")
    assert row in markdown
    assert f"best's balanced accuracy is inflated by an estimated {decision.optimism:+.3f}" in markdown


def _degenerate_probs(labels: np.ndarray) -> np.ndarray:
    """Right on everything but mel, which is never predicted (called nv)."""
    probs = np.full((labels.size, len(CLASSES)), 0.02)
    predicted = np.where(labels == CLASSES.index("mel"), NV, labels)
    probs[np.arange(labels.size), predicted] = 0.88
    return probs


def _half_right_probs(labels: np.ndarray) -> np.ndarray:
    """Right on the first half of each class's images, the next class on the rest."""
    probs = np.full((labels.size, len(CLASSES)), 0.02)
    predicted = labels.copy()
    for cls in range(len(CLASSES)):
        members = np.flatnonzero(labels == cls)
        predicted[members[members.size // 2:]] = (cls + 1) % len(CLASSES)
    probs[np.arange(labels.size), predicted] = 0.88
    return probs


def test_a_degenerate_run_is_flagged_everywhere_and_warned_when_recommended(tmp_path: Path):
    labels = labels_of()
    for seed in (0, 1):
        make_record(tmp_path, "simple_cnn", 512, seed=seed, probs=_degenerate_probs(labels))
        make_record(tmp_path, "simple_cnn", 224, seed=seed, probs=_half_right_probs(labels))
    study = build(tmp_path)
    data = study.data_sets["synthetic"]
    flagged = [run for run in data.runs if run.flags]
    assert {(run.record.resolution, run.seed) for run in flagged} == {(512, 0), (512, 1)}
    mel = COUNTS[CLASSES.index("mel")]
    assert flagged[0].flags == [f"never predicts mel ({mel} test images)"]
    rec = data.recommendations["simple_cnn"]
    assert rec.resolution == 512 and rec.decided  # 6/7 against 1/2: shown on two agreeing seeds
    assert rec.warnings == tuple(f"512 px, seed {seed}, is a degenerate run: never predicts mel ({COUNTS[4]} "
                                 "test images)" for seed in (0, 1))
    write_aggregates(tmp_path, evaluate_cross_res=False, n_resamples=200, strict=True)
    markdown = (tmp_path / "report.md").read_text()
    assert "**2 of 4 runs are degenerate.**" in markdown and "never predicts mel" in markdown
    assert "**Warning**: 512 px, seed 0, is a degenerate run" in markdown
    with open(tmp_path / "all_results.csv", newline="") as handle:
        rows = {(row["resolution"], row["seed"]): row["degenerate"] for row in csv.DictReader(handle)}
    assert rows[("512", "0")] == f"never predicts mel ({mel} test images)" and rows[("224", "0")] == ""
    summary = json.loads((tmp_path / "results_summary.json").read_text())["data_sets"]["synthetic"]
    assert {(r["resolution"], r["seed"]) for r in summary["runs"] if r["degenerate"]} == {(512, 0), (512, 1)}


def test_accuracy_below_the_majority_rate_and_a_first_best_epoch_are_flagged(tmp_path: Path):
    labels = labels_of()
    always_bcc = np.full((labels.size, len(CLASSES)), 0.02)
    always_bcc[:, CLASSES.index("bcc")] = 0.88
    record = make_record(tmp_path, "tiny_cnn", 224, probs=always_bcc)
    write_record(tmp_path, dataclasses.replace(record, best_epoch=0, epochs_run=4))
    run = build(tmp_path).data_sets["synthetic"].runs[0]
    majority = max(COUNTS) / sum(COUNTS)
    accuracy = COUNTS[CLASSES.index("bcc")] / sum(COUNTS)
    expected = (f"plain accuracy {accuracy:.3f} below the majority-class rate {majority:.3f} "
                "(always answering nv)")
    assert expected in run.flags
    assert any(flag.startswith("best epoch is the first of 4") for flag in run.flags)
    assert any(flag.startswith("never predicts nv") for flag in run.flags)


PAYLOAD = '<img src=x onerror=alert(1)>![p](/etc/passwd)|x *b* `c`'


def test_record_derived_text_is_escaped_in_markdown_and_html(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(test_report_cases, "CLASSES", [*CLASSES[:-1], PAYLOAD])
    for res in (224, 512):
        make_record(tmp_path, "simple_cnn", res)
    write_aggregates(tmp_path, evaluate_cross_res=False, n_resamples=200, strict=True)
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    assert PAYLOAD not in markdown and esc(PAYLOAD) in markdown
    assert "<img src=x" not in page and "/etc/passwd" not in re.findall(r'<img src="([^"]*)"', page)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]*)"', page))
    # Rendered back, the class name reads as the literal text it is.
    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(esc(PAYLOAD))
    assert rendered == "<p>&lt;img src=x onerror=alert(1)&gt;![p](/etc/passwd)|x *b* `c`</p>\n"
    # The tables holding the class name keep their shape: as many cells in every row as headers.
    tables = [t for t in re.findall(r"<table>.*?</table>", page, re.S) if "&lt;img src=x" in t]
    assert tables
    for found in tables:
        headers = len(re.findall(r"<th[ >]", found))
        rows = re.findall(r"<tr>(.*?)</tr>", found.split("</thead>")[1], re.S)
        assert rows and all(len(re.findall(r"<td[ >]", row)) == headers for row in rows)


def test_the_report_opens_with_a_linked_table_of_contents_and_the_answer(tmp_path: Path):
    for res in (224, 512):
        make_record(tmp_path, "simple_cnn", res)
    write_aggregates(tmp_path, evaluate_cross_res=False, n_resamples=200, strict=True)
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert titles[0] == "Answer: the resolution to use for each model"
    contents = markdown.index("**Contents**")
    assert contents < markdown.index("## Answer")
    links = re.findall(r"- \[[^\]]+\]\(#([a-z0-9_-]+)\)", markdown[contents:markdown.index("## Answer")])
    assert len(links) == len(titles) and links[0] == "answer-the-resolution-to-use-for-each-model"
    for anchor in links:
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page
    assert anchors([type("S", (), {"title": "A b"})(), type("S", (), {"title": "A b"})()]) == ["a-b", "a-b-1"]


@pytest.mark.parametrize("margin, relation", [(0.02, "below"), (0.05, "above")])
def test_the_margin_is_set_against_one_test_image(tmp_path: Path, margin: float, relation: str):
    for res in (224, 512):
        make_record(tmp_path, "simple_cnn", res)
    markdown = strict_report(tmp_path, Settings(margin=margin, n_resamples=200))
    smallest = min(COUNTS)  # df, 4 images: 1 / (7 x 4) = 0.0357
    assert (f"One test image of the smallest class (df, {smallest} images) moves balanced accuracy by up to "
            f"1/(7 x {smallest}) = {1 / (7 * smallest):.4f}; the margin {margin:g} is {relation} one image's "
            "effect.") in markdown


def test_digests_restrict_the_study_to_those_runs(tmp_path: Path):
    kept = [make_record(tmp_path, "simple_cnn", res) for res in (224, 512)]
    make_record(tmp_path, "simple_cnn", 512, seed=1)
    make_record(tmp_path, "tiny_cnn", 224)
    write_aggregates(tmp_path, evaluate_cross_res=False, digests={r.identity.digest for r in kept},
                     n_resamples=200, strict=True)
    with open(tmp_path / "all_results.csv", newline="") as handle:
        rows = [(row["model"], row["resolution"], row["seed"]) for row in csv.DictReader(handle)]
    assert sorted(rows) == [("simple_cnn", "224", "0"), ("simple_cnn", "512", "0")]
    summary = json.loads((tmp_path / "results_summary.json").read_text())
    assert summary["total_experiments"] == 2 and summary["models"] == ["simple_cnn"]
