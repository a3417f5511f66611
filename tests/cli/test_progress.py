"""Seeing the whole sweep from a real multirun: one progress line per job with its count and an
ETA from fvcore's GMACs and the finished jobs' times, each log line once, and the per-epoch
metrics in each job's log file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY_SPEC

from resomap.logs import approx
from resomap.measure.complexity import fvcore_macs
from resomap.models.simple import TinyCNN
from resomap.progress import JOB_FILE, PLAN_FILE

RESOLUTIONS = (32, 40, 48)
LINE = re.compile(r"\[(\d+)/(\d+)\] (\S+) done in (\d+:\d\d)"
                  r"(?:, sweep ETA (~[^\n]+)|, all (\d+) jobs done in)")


@pytest.mark.slow
def test_sweep_progress_lines_count_jobs_and_estimate_from_macs(train_cli, tmp_path: Path):
    completed = train_cli("-m", "model=tiny_cnn", f"res={','.join(map(str, RESOLUTIONS))}", "logger=none",
                          "explain=none", "evaluate_cross_res=false")
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    lines = [match for match in LINE.finditer(output)]
    assert [(int(m[1]), int(m[2]), m[3]) for m in lines] == [
        (index + 1, 3, f"tiny_cnn_{res}") for index, res in enumerate(RESOLUTIONS)]

    sweep = tmp_path / "multirun"
    plan = json.loads((sweep / PLAN_FILE).read_text())
    jobs = plan["batches"][0]["jobs"]
    assert [job["run_name"] for job in jobs] == [f"tiny_cnn_{res}" for res in RESOLUTIONS]
    # A job's work is fvcore's forward GMACs per image x the images it processes: one epoch of
    # 3 passes over the training images and one over the validation images, then the test set.
    images = 3 * TINY_SPEC["n_train"] + TINY_SPEC["n_val"] + TINY_SPEC["n_test"]
    for job, res in zip(jobs, RESOLUTIONS):
        with torch.no_grad():
            gmacs = fvcore_macs(TinyCNN(num_classes=7).eval(), torch.zeros(1, 3, res, res)).total() / 1e9
        assert job["unit"] == "GMAC-images" and job["work"] == pytest.approx(gmacs * images)

    # The first line's ETA: its seconds per unit of work x the work of the two jobs left.
    first = json.loads(next(sweep.glob(f"0_*/{JOB_FILE}")).read_text())
    assert first["status"] == "finished"
    expected = first["seconds"] / jobs[0]["work"] * (jobs[1]["work"] + jobs[2]["work"])
    assert lines[0][5] == approx(expected)
    assert lines[2][6] == "3"

    # Each line once: Lightning's lines are no longer printed by its own handler as well.
    for text in ("Seed set to 0", "`Trainer.fit` stopped: `max_epochs=1` reached"):
        assert output.count(text) == 3, text
    assert "litlogger" not in output and "View run" not in output
    assert "exists and is not empty" not in output

    # Per-epoch metrics in the job's own log file (SLURM, tee).
    for res in RESOLUTIONS:
        log = next(sweep.glob(f"*_tiny_cnn_{res}/train.log")).read_text()
        epoch = [line for line in log.splitlines() if "epoch 1/1:" in line]
        assert len(epoch) == 1 and "train_loss" in epoch[0] and "val_balanced_accuracy" in epoch[0]
        assert re.search(r"lr \d", epoch[0])
        assert log.count(f"tiny_cnn_{res} done in") == 1


def test_long_steps_log_a_line_per_tenth(caplog: pytest.LogCaptureFixture):
    """The hook for steps whose tqdm bar would flood a log file (data generation)."""
    import logging

    from resomap.logs import log_progress

    with caplog.at_level(logging.INFO, logger="resomap.logs"):
        assert list(log_progress(range(20), 20, "Generating synthetic images", every=0.25)) == list(range(20))
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(" (")[0] for line in lines] == [
        f"Generating synthetic images: {count}/20" for count in (5, 10, 15, 20)]
    assert "left" in lines[0] and "done in 0:00" in lines[-1]


def test_a_sweeper_in_looks_counts_each_look_and_rates_only_trained_jobs(tmp_path: Path):
    """An adaptive sweeper plans each look as it launches it (plan_batch with a label): the count
    and ETA are per look; skipped jobs, which cost nothing, do not enter the rate."""
    from resomap.io import write_json
    from resomap.progress import progress_line

    plan = {"started": 0.0, "batches": [
        {"label": None, "jobs": [{"num": 0, "run_name": "a_224", "work": 1.0}]},
        {"label": "look 2", "jobs": [{"num": 1, "run_name": "a_256", "work": 1.0},
                                     {"num": 2, "run_name": "a_320", "work": 2.0},
                                     {"num": 3, "run_name": "a_384", "work": 3.0}]}]}

    def finish(num: int, status: str, seconds: float) -> None:
        write_json(tmp_path / f"{num}_job" / JOB_FILE, {"num": num, "run_name": "x", "status": status,
                                                        "seconds": seconds, "ended": 100.0 + num})

    finish(1, "skipped", 0.5)
    assert progress_line(plan, tmp_path, 1, "a_256", "skipped", 0.5) == (
        "[look 2: 1/3] a_256 skipped (finished before), look ETA after the first trained run")
    finish(2, "finished", 40.0)
    # 40 s for 2 units of work; 3 units left.
    assert progress_line(plan, tmp_path, 2, "a_320", "finished", 40.0) == (
        "[look 2: 2/3] a_320 done in 0:40, look ETA ~1 min")
    assert progress_line(plan, tmp_path, 2, "a_320", "finished", 40.0, parallel=2) == (
        "[look 2: 2/3] a_320 done in 0:40, look ETA ~30 s")
