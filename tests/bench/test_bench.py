"""``python -m resomap.bench`` end to end on tiny data, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SPEC, compose_config, run_module, tiny_overrides

from resomap.device import resolve_precision

pytestmark = pytest.mark.slow

OVERHEAD = ["bench.overhead.res=32", "bench.overhead.epochs=2", "bench.overhead.rounds=1"]
ROOFLINE = ["bench.roofline.models=[tiny_cnn]", "bench.roofline.resolutions=[32,40]",
            "bench.roofline.warmup_steps=1", "bench.roofline.timed_steps=1",
            "bench.roofline.peak_sizes=[64,128]", "bench.roofline.peak_seconds=0.01"]
PRECISION = ["bench.precision.enabled=true", "bench.precision.model=tiny_cnn", "bench.precision.res=32",
             "bench.precision.rounds=2", "bench.precision.timed_steps=1"]


def test_bench_prints_both_pipelines_overhead_and_a_seed_scale_projection(tmp_path: Path,
                                                                          tiny_data_root: Path):
    seed_scale = [f"bench.seed_scale_data.{key}={value}" for key, value in TINY_SPEC.items()
                  if key != "seed"]
    completed = run_module("resomap.bench", [
        *tiny_overrides(tmp_path, tiny_data_root), "model=tiny_cnn", "res=32", "bench.epochs=1",
        "bench.pipelines=[classic,cached]", *ROOFLINE,
        "bench.seed_scale=true", *seed_scale, "bench.study.models=[tiny_cnn]",
        "bench.study.resolutions=[32,40]", "bench.study.warmup_steps=1", "bench.study.timed_steps=1",
        "bench.study.epochs=25", *OVERHEAD, *PRECISION,
    ], cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["pipeline"])
    assert "data img/s" in header and "train img/s" in header and "test acc" in header
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] in (["classic"], ["cached"])}
    assert rows.keys() == {"classic", "cached"}
    assert "cached / classic:" in completed.stdout
    assert "Framework overhead (tiny_cnn at 32 px" in completed.stdout
    assert "Precision: tiny_cnn at 32 px" in completed.stdout and "32-true:" in completed.stdout
    assert "1-minute load" in completed.stdout and "torch thread(s)" in completed.stdout
    # The machine is named, its peak measured, and each configuration placed under it.
    assert "AMX" in completed.stdout or "AVX" in completed.stdout
    assert "Machine peak, measured here" in completed.stdout
    roofline_header = next(line for line in lines if line.split()[:2] == ["model", "res"])
    assert "img/s" in roofline_header and "TFLOP/s" in roofline_header and "of bf16 peak" in roofline_header
    assert "Projected seed-scale study (2 runs x 25 epochs" in completed.stdout

    payload = json.loads(next((tmp_path / "outputs").rglob("bench.json")).read_text())
    assert [row["pipeline"] for row in payload["rows"]] == ["classic", "cached"]
    for row in payload["rows"]:
        assert row["data_images_per_sec"] > 0 and row["train_images_per_sec"] > 0
        assert 0 <= row["test_accuracy"] <= 1 and len(row["epoch_seconds"]) == 1
    assert payload["forward_gmacs"] > 0
    assert payload["machine"]["cpu"] and "avx512_bf16" in payload["machine"]
    roofline = payload["roofline"]
    peak = roofline["peak"]["bfloat16"]["tflops"]
    assert peak > 0 and roofline["peak"]["float32"]["tflops"] > 0
    assert [(row["model"], row["res"]) for row in roofline["rows"]] == [("tiny_cnn", 32), ("tiny_cnn", 40)]
    for row in roofline["rows"]:
        # The run's precision sets the ceiling: bf16-mixed under the bf16 peak, 32-true the fp32 one.
        ceiling = "bf16" if row["precision"] == "bf16-mixed" else "fp32"
        assert row["fraction_of_peak"] == row[f"fraction_of_{ceiling}_peak"]
        assert row["fraction_of_bf16_peak"] == pytest.approx(row["train_tflops"] / peak)
        flops_per_image = 2 * 3 * row["forward_gmacs"] * 1e9
        assert row["train_tflops"] == pytest.approx(flops_per_image * row["images_per_sec"] / 1e12)
    assert payload["overhead"]["load_1min"] is not None and "rounds_disagree" in payload["overhead"]
    precision = payload["precision"]
    assert {name: len(rounds) for name, rounds in precision["rounds"].items()} == {"bf16-mixed": 2,
                                                                                  "32-true": 2}
    for name, rounds in precision["rounds"].items():  # the median of two rounds is their mean
        assert precision["median_step_sec"][name] == pytest.approx(sum(rounds) / 2)
    assert precision["time_over_first"]["32-true"] == pytest.approx(
        precision["median_step_sec"]["32-true"] / precision["median_step_sec"]["bf16-mixed"])
    overhead = payload["overhead"]
    assert overhead["bare_images_per_sec"] > 0 and overhead["resomap_images_per_sec"] > 0
    rates = overhead["resomap_images_per_sec"], overhead["bare_images_per_sec"]
    assert overhead["ratio"] == pytest.approx(rates[0] / rates[1])
    assert overhead["precision"] == resolve_precision("16-mixed", "cpu")
    assert len(overhead["rounds"][0]["bare_epoch_seconds"]) == 2
    projection = payload["projection"]
    assert projection["study_sec"] > 0 and [run["res"] for run in projection["runs"]] == [32, 40]
    assert (tmp_path / "data" / "synthetic_seed_scale" / "train").is_dir()
    # Both resolutions of the study were cached in the first run's single decode pass.
    cached = sorted(path.name.split("-")[1] for path in (tmp_path / "data" / "cache").rglob("train-*px-*.npy")
                    if "seed_scale" in str(path) and not path.name.endswith(".labels.npy"))
    assert cached == ["32px", "40px"]


def test_gpu_check_needs_a_gpu(tmp_path: Path, tiny_data_root: Path):
    completed = run_module("resomap.bench", [*tiny_overrides(tmp_path, tiny_data_root), "gpu_check=true",
                                             "trainer.accelerator=cpu"], cwd=tmp_path)
    assert completed.returncode == 2
    assert "gpu_check=true measures the GPU path and needs a CUDA GPU" in completed.stderr
    assert not list(tmp_path.rglob("bench.json"))


def test_gpu_check_steps_run_and_write_their_figures(tmp_path: Path, tiny_data_root: Path):
    """The GPU command's code path, on the CPU with tiny sizes (the figures themselves need a GPU)."""
    from resomap.benchmarks.gpu_check import gpu_check

    data = [f"bench.gpu_check.data.{key}={value}" for key, value in TINY_SPEC.items() if key != "seed"]
    overrides = [
        *[item for item in tiny_overrides(tmp_path, tiny_data_root) if not item.startswith("hydra.")],
        f"bench.output={tmp_path}/gpu_check.json", *data, "bench.study.models=[tiny_cnn]",
        "bench.study.resolutions=[32]", "bench.study.warmup_steps=1", "bench.study.timed_steps=1",
        "bench.gpu_check.profile_resolutions=[32]", "bench.gpu_check.peak_sizes=[64]",
        "bench.roofline.peak_seconds=0.01", "bench.gpu_check.profile_batch_size=4",
        "bench.gpu_check.overhead_res=32", "bench.overhead.epochs=2", "bench.overhead.rounds=1",
        "bench.gpu_check.variants.model=tiny_cnn", "bench.gpu_check.variants.res=32",
        "bench.gpu_check.variants.precisions=[bf16-mixed]", "bench.gpu_check.variants.compile=[false]",
        "bench.gpu_check.variants.warmup_steps=1", "bench.gpu_check.variants.timed_steps=1",
    ]
    cfg = compose_config("bench", overrides)
    payload = gpu_check(cfg, require_cuda=False)
    assert payload == json.loads((tmp_path / "gpu_check.json").read_text())
    runs = payload["projection"]["runs"]
    assert [(run["model"], run["res"]) for run in runs] == [("tiny_cnn", 32)]
    # Projected to the seed's split sizes, not the stand-in's: 30224 / 16 training steps per epoch.
    assert runs[0]["epoch_sec"] >= -(-30224 // 16) * runs[0]["train_step_sec"]
    profile = payload["profiles"][0]
    assert profile["profiling"]["image_size"] == 32 and profile["complexity"]["macs"] > 0
    assert payload["overhead"]["res"] == 32 and payload["variants"][0]["train_step_sec"] > 0
    assert payload["timing"]["total_sec"] > 0
    assert payload["peak"]["float16"]["tflops"] > 0 and payload["peak"]["bfloat16"]["size"] == 64
