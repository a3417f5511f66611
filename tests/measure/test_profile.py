"""The profiling callback in a real training run: the result's cost sections and logged metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resomap.callbacks.profile import ProfileCallback
from resomap.device import cpu_has_native_bf16
from resomap.measure.latency import AutoStop, relative_standard_error, runs_for, time_forward
from resomap.measure.memory import RssIncrease, peak_rss_mb

CHEAP = ("explain=none", "logger=csv", "callbacks.profile.warmup_runs=1",
         "callbacks.profile.timed_runs=3", "callbacks.profile.batch_size=8")
# The default passes ("auto": 1 warm-up, then 3 to 25 timed on a CPU until the mean is known to
# 2 %, within the default 5 s that the tests' runs shorten), a small inference batch.
AUTO = ("explain=none", "logger=csv", "callbacks.profile.batch_size=8", "callbacks.profile.max_seconds=5.0")
SEED_KEYS = ("avg_time_sec", "std_time_sec", "min_time_sec", "max_time_sec", "throughput_samples_sec",
             "peak_cpu_memory_mb")
STATS = ("mean_sec", "min_sec", "max_sec", "p50_sec", "p95_sec", "per_image_mean_sec",
         "per_image_p50_sec", "throughput_images_sec")


@pytest.mark.slow
def test_run_records_profiling_and_complexity(train_cli, tmp_path: Path):
    completed = train_cli("model=tiny_cnn", "res=48", "trainer.max_epochs=2", *AUTO)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "results" / "test_results" / "tiny_cnn_48.json").read_text())

    profiling = result["profiling"]
    assert all(profiling[key] > 0 for key in SEED_KEYS)
    assert not any(key.startswith("gpu_") for key in profiling)
    assert profiling["min_time_sec"] <= profiling["median_time_sec"] <= profiling["max_time_sec"]
    assert profiling["min_time_sec"] <= profiling["avg_time_sec"] <= profiling["max_time_sec"]
    assert profiling["throughput_samples_sec"] == pytest.approx(8 / profiling["avg_time_sec"])
    assert (profiling["precision"], profiling["autocast_dtype"]) == (
        ("bf16-mixed", "bfloat16") if cpu_has_native_bf16() else ("32-true", None))
    assert (profiling["image_size"], profiling["batch_size"], profiling["batch_sizes"]) == (48, 8, [1, 8])
    assert profiling["warmup_runs"] == 1  # "auto" on a CPU
    for name in ("batch_1", "inference_batch"):
        runs, rse = profiling["timed_runs"][name], profiling["latency"][name]["relative_standard_error"]
        # Stopped by the rule: 3 passes at least, 25 at most, early only once the mean was known.
        assert 3 <= runs <= 25 and profiling["latency"][name]["runs"] == runs
        assert runs == 25 or rse <= 0.02 or runs * profiling["latency"][name]["mean_sec"] >= 5.0
    machine = profiling["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and "avx512_bf16" in machine
    assert profiling["seconds"] > 0
    # The model's memory, not the process's: the rise over the baseline is well below the peak.
    assert 0 <= profiling["cpu_memory_increase_mb"] < profiling["peak_cpu_memory_mb"] / 2
    for name, batch in (("batch_1", 1), ("inference_batch", 8)):
        latency = profiling["latency"][name]
        assert latency["batch_size"] == batch and all(latency[key] > 0 for key in STATS)
        assert latency["min_sec"] <= latency["p50_sec"] <= latency["p95_sec"] <= latency["max_sec"]
        assert latency["per_image_mean_sec"] == pytest.approx(latency["mean_sec"] / batch)
        assert latency["throughput_images_sec"] == pytest.approx(1 / latency["per_image_mean_sec"])
    assert profiling["latency"]["inference_batch"]["mean_sec"] == profiling["avg_time_sec"]

    training = profiling["training"]
    assert training["fit_wall_time_sec"] > 0 and training["images_per_sec"] > 0
    assert training["epochs_measured"] == 1 and len(training["epoch_images_per_sec"]) == 2
    assert training["images_per_sec"] == training["epoch_images_per_sec"][1]
    assert 0 <= training["cpu_memory_increase_mb"] < training["peak_cpu_memory_mb"]

    complexity = result["complexity"]
    assert complexity["image_size"] == 48
    assert complexity["macs"] > 0 and complexity["mult_adds"] > 0
    assert complexity["params_total"] == complexity["params_trainable"] > 0
    assert complexity["activation_memory_mb"] > 0
    assert complexity["skipped_ops"] == ["aten::max_pool2d"]

    metrics_file = next((tmp_path / "outputs" / "csv").glob("*/metrics.csv"))
    logged = [row for row in csv.DictReader(metrics_file.open()) if row.get("profile_avg_time_sec")]
    assert len(logged) == 1
    assert float(logged[0]["profile_avg_time_sec"]) == pytest.approx(profiling["avg_time_sec"])
    assert float(logged[0]["complexity_macs"]) == complexity["macs"]
    assert float(logged[0]["throughput_samples_sec"]) > 0


@pytest.mark.slow
def test_bad_setting_is_named(train_cli):
    completed = train_cli("model=tiny_cnn", "res=32", "callbacks.profile.timed_runs=0", *CHEAP[:3])
    assert completed.returncode == 2
    assert "callbacks.profile.timed_runs=0 is not valid" in completed.stderr


def test_auto_passes_suit_the_device():
    assert runs_for(torch.device("cpu"), "auto", "auto") == (1, 25)
    assert runs_for(torch.device("cuda"), "auto", "auto") == (5, 25)  # the seed's, where passes are fast
    assert runs_for(torch.device("cpu"), 2, "auto") == (2, 25)
    assert ProfileCallback(image_size=32, warmup_runs=None, timed_runs="AUTO").timed_runs == "auto"


def test_cpu_memory_figure_is_the_rise_during_the_phase():
    held = np.ones(8 * 2**20)  # 64 MiB already resident: part of the baseline, not of the phase
    phase = RssIncrease()
    if not phase.valid:
        pytest.skip("the kernel's resident high-water mark cannot be reset here")
    assert phase.mb() < 30
    grown = np.ones(12 * 2**20)  # 96 MiB touched during the phase
    rise = phase.mb()
    assert 0.9 * grown.nbytes / 1e6 <= rise <= grown.nbytes / 1e6 + 30
    assert rise < peak_rss_mb() - held.nbytes / 1e6


def test_timed_passes_stop_when_the_mean_is_known():
    stop = AutoStop(target_rse=0.02, min_runs=3, max_seconds=10.0)
    assert not stop([1.0, 1.0])  # fewer than the minimum
    assert stop([1.0, 1.0, 1.0])  # no spread: the mean is known
    noisy = [1.0, 2.0, 1.0]
    # Standard error of the mean over the mean: sd (0.577) / sqrt(3) / 1.333 = 0.25
    expected = np.std(noisy, ddof=1) / np.sqrt(3) / np.mean(noisy)
    assert relative_standard_error(noisy) == pytest.approx(expected)
    assert not stop(noisy)
    assert stop([4.0, 2.0, 5.0])  # 11 s spent: the budget ends it whatever the spread
    assert relative_standard_error([1.0]) == float("inf")


def test_time_forward_obeys_the_stop_rule_and_the_cap():
    calls = []
    times = time_forward(lambda: calls.append(1), torch.device("cpu"), warmup_runs=2, timed_runs=25,
                         stop=lambda measured: len(measured) == 4)
    assert len(times) == 4 and len(calls) == 6  # 2 warm-up + 4 timed
    calls.clear()
    assert len(time_forward(lambda: calls.append(1), torch.device("cpu"), 0, 7, stop=lambda m: False)) == 7
