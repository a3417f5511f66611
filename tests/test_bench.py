"""``python -m resomap.bench`` end to end on tiny data, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SPEC, run_module, tiny_overrides

pytestmark = pytest.mark.slow


def test_bench_prints_both_pipelines_and_a_seed_scale_projection(tmp_path: Path, tiny_data_root: Path):
    seed_scale = [f"bench.seed_scale_data.{key}={value}" for key, value in TINY_SPEC.items()
                  if key != "seed"]
    completed = run_module("resomap.bench", [
        *tiny_overrides(tmp_path, tiny_data_root), "model=tiny_cnn", "res=32", "bench.epochs=1",
        "bench.seed_scale=true", *seed_scale, "bench.study.models=[tiny_cnn]",
        "bench.study.resolutions=[32]", "bench.study.warmup_steps=1", "bench.study.timed_steps=1",
        "bench.study.epochs=25",
    ], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["pipeline"])
    assert "data img/s" in header and "train img/s" in header and "test acc" in header
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["classic"], ["cached"])}
    assert rows.keys() == {"classic", "cached"}
    assert "cached / classic:" in completed.stdout
    assert "Projected seed-scale study (1 runs x 25 epochs" in completed.stdout

    payload = json.loads(next((tmp_path / "outputs").rglob("bench.json")).read_text())
    assert [row["pipeline"] for row in payload["rows"]] == ["classic", "cached"]
    for row in payload["rows"]:
        assert row["data_images_per_sec"] > 0 and row["train_images_per_sec"] > 0
        assert 0 <= row["test_accuracy"] <= 1 and len(row["epoch_seconds"]) == 1
    assert payload["forward_gflops_fvcore"] > 0
    projection = payload["projection"]
    assert projection["study_sec"] > 0 and projection["runs"][0]["model"] == "tiny_cnn"
    assert (tmp_path / "data" / "synthetic_seed_scale" / "train").is_dir()
