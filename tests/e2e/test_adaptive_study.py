"""An adaptive study, SIGKILLed part-way and re-run with the same command, adds exactly the runs
its decisions ask for: a second seed everywhere, then the next seed only for the best resolution
and those whose comparison with it is undecided, and nothing once decided or at study.max_seeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides

from resomap.run import record as records
from resomap.study.decide import decide
from resomap.study.decision_settings import check_settings
from resomap.study.study import load_run

RESOLUTIONS = (32, 48)
MAX_SEEDS = 3
# One epoch on 21 test images: comparisons are usually undecided, so the study goes on to a third
# seed; the checks below hold whatever the decisions turn out to be.
STUDY = ["study=adaptive", "model=tiny_cnn", f"res={','.join(map(str, RESOLUTIONS))}",
         f"study.max_seeds={MAX_SEEDS}", "logger=none", "explain=none",
         "callbacks.profile.warmup_runs=1", "callbacks.profile.timed_runs=2"]


def _command(root: Path, data_root: Path) -> list[str]:
    return [sys.executable, "-m", "resomap.train", "-m", *tiny_overrides(root, data_root), *STUDY]


def _start(root: Path, data_root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESOMAP_ROOT", None)
    # Its own process group, so the kill reaches everything the sweep started; output to a file,
    # so a full pipe never blocks it.
    with log.open("w") as out:
        return subprocess.Popen(_command(root, data_root), cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _finished(root: Path) -> dict[tuple[int, int], records.RunRecord]:
    found = {}
    for _, record in records.iter_records(root / "results"):
        assert not isinstance(record, records.InvalidRecord), record
        found[(record.resolution, record.seed)] = record
    return found


def _expected(root: Path, seeds: dict[int, set[int]], settings) -> dict[int, list[int]]:
    """What the rule asks for, given the runs with ``seeds``: decided from the records here."""
    if min(map(len, seeds.values())) < 2:
        return {res: [1] for res in seeds if 1 not in seeds[res]}
    runs: dict[int, dict[int, object]] = {}
    for path, record in records.iter_records(root / "results"):
        if record.seed in seeds.get(record.resolution, ()):
            runs.setdefault(record.resolution, {})[record.seed] = load_run(root / "results", path,
                                                                           record).predictions
    decision = decide(runs, settings)
    count = len(seeds[decision.best]) + 1
    undecided = [res for res, verdict in decision.verdicts.items() if verdict.status == "undecided"]
    if not undecided or count > MAX_SEEDS:
        return {}
    return {res: [seed for seed in range(count) if seed not in seeds[res]]
            for res in [decision.best, *undecided]}


@pytest.mark.slow
def test_a_killed_adaptive_study_resumes_and_adds_only_what_its_decisions_ask(tmp_path: Path,
                                                                               tiny_data_root: Path):
    # First invocation: killed once look 1's first added run (seed 1) has finished.
    process = _start(tmp_path, tiny_data_root, tmp_path / "first.log")
    marker = records.view_path(tmp_path / "results", "tiny_cnn_32_seed1")
    deadline = time.monotonic() + 900
    while process.poll() is None and not marker.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {key: record.timestamp for key, record in _finished(tmp_path).items()}
    assert set(before) >= {(32, 0), (48, 0), (32, 1)}

    # The same command again: it runs to the end.
    process = _start(tmp_path, tiny_data_root, tmp_path / "second.log")
    assert process.wait(timeout=1800) == 0, (tmp_path / "second.log").read_text()[-3000:]
    output = (tmp_path / "second.log").read_text()

    # Finished runs were skipped, not trained again.
    after = _finished(tmp_path)
    assert {key: after[key].timestamp for key in before} == before
    assert output.count("Skipping tiny_cnn_") >= len(before)

    # Each look added what the decisions, recomputed here from the records, ask for.
    trace = json.loads((tmp_path / "multirun" / "adaptive_study.json").read_text())
    settings = check_settings(looks=MAX_SEEDS - 2 + 1)
    seeds = {res: {0} for res in RESOLUTIONS}
    for look in trace["looks"]:
        asked = look["configurations"]["tiny_cnn"]["added"]
        added = {int(res): new for res, new in asked.items()}
        assert added == _expected(tmp_path, seeds, settings), look
        assert look["started"] == bool(added)
        for res, new in added.items():
            seeds[res] |= set(new)
    assert not trace["looks"][-1]["started"]

    # The records and the job folders are exactly the grid plus those additions, one job each.
    assert set(after) == {(res, seed) for res, found in seeds.items() for seed in found}
    assert all(len(found) <= MAX_SEEDS for found in seeds.values())
    jobs = []
    for folder in (tmp_path / "multirun").glob("*_tiny_cnn_*"):
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        found = dict(item.split("=", 1) for item in overrides if item.split("=", 1)[0] in ("res", "seed"))
        jobs.append((int(found["res"]), int(found.get("seed", 0))))
    assert sorted(jobs) == sorted(after)
    assert trace["cost"]["runs"] == len(after)
    assert trace["cost"]["full_grid_runs"] == len(RESOLUTIONS) * MAX_SEEDS


def test_a_bad_study_setting_stops_before_the_first_run(train_cli, tmp_path: Path):
    completed = train_cli("-m", "study=adaptive", "study.max_seeds=1", "model=tiny_cnn", "res=32,48",
                          "logger=none")
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "study.max_seeds=1 is not valid" in completed.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_look_projected_past_the_budget_is_not_started(train_cli, tmp_path: Path):
    # The grid alone takes more recorded time than this budget: no look may start.
    completed = train_cli("-m", *STUDY, "study.budget_minutes=0.001")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert set(_finished(tmp_path)) == {(res, 0) for res in RESOLUTIONS}
    trace = json.loads((tmp_path / "multirun" / "adaptive_study.json").read_text())
    (look,) = trace["looks"]
    assert not look["started"] and look["runs"] == len(RESOLUTIONS)
    assert look["projected_sec"] > 0 and look["spent_sec"] > 0.001 * 60
    assert "look 1 not started" in completed.stdout + completed.stderr


# An editable install (pip install -e .) maps this project's hydra_plugins package through an
# import hook that Hydra's plugin scan does not list: simulated by taking the folder out of the
# namespace's path after importing the package, as the hook leaves it.
EDITABLE_INSTALL = """
import sys
from pathlib import Path
import hydra_plugins, hydra_plugins.resomap_sweeper
hydra_plugins.__path__ = [p for p in hydra_plugins.__path__ if not (Path(p) / "resomap_sweeper").is_dir()]
import resomap.train
from resomap.cli import start
start(resomap.train.main)
"""


def test_the_sweeper_is_found_when_hydra_s_plugin_scan_cannot_see_it(tmp_path: Path, tiny_data_root: Path):
    args = ["-m", *tiny_overrides(tmp_path, tiny_data_root), "study=adaptive", "study.max_seeds=1",
            "model=tiny_cnn", "res=32,48", "logger=none"]
    completed = subprocess.run([sys.executable, "-c", EDITABLE_INSTALL, *args], cwd=tmp_path,
                               capture_output=True, text=True, timeout=600)
    # The sweeper was instantiated and ran: its own check of study.max_seeds answered.
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "study.max_seeds=1 is not valid" in completed.stderr
