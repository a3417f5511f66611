"""The peak's arithmetic, the roofline fraction and the overhead comparison's rules (no timing)."""

from __future__ import annotations

import pytest
import torch

from resomap.benchmarks.overhead import overhead_threads, rounds_disagree
from resomap.measure.peak import fraction_of_peak, matmul_flops, saturate, tflops, training_tflops

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_matmul_flops_count_two_per_multiply_add():
    # n x n by n x n: n^2 outputs of n multiply-adds each.
    assert matmul_flops(2048) == 2 * 2048 ** 3 == 17_179_869_184
    assert tflops(matmul_flops(1024), 0.01) == pytest.approx(2 * 1024 ** 3 / 0.01 / 1e12)
    with pytest.raises(ValueError):
        tflops(1.0, 0.0)


def test_training_rate_is_three_forwards_of_doubled_fvcore_counts():
    # The figure: simple_cnn at 512 px, 3.85 G multiply-adds, 784 images in 181 s.
    achieved = training_tflops(3.85e9, 784 / 181)
    assert achieved == pytest.approx(2 * 3.85e9 * 3 * 784 / 181 / 1e12)
    assert achieved == pytest.approx(0.1, abs=0.01)


def test_roofline_fraction():
    assert fraction_of_peak(0.1, 0.4) == pytest.approx(0.25)
    assert fraction_of_peak(0.1, None) is None and fraction_of_peak(0.1, 0.0) is None


def test_peak_is_where_the_rate_stops_growing():
    rates = {512: 0.10, 1024: 0.30, 2048: 0.40, 4096: 0.41, 8192: 0.9}
    asked = []

    def rate_at(n):
        asked.append(n)
        return rates[n]

    best, size, seen = saturate(rate_at, sizes=sorted(rates))
    # 4096 gained under 5 % on 2048: saturated, 8192 never tried.
    assert asked == [512, 1024, 2048, 4096] and (best, size) == (0.41, 4096) and seen == {
        n: rates[n] for n in asked}
    best, size, _ = saturate({512: 0.5, 1024: 0.2}.get, sizes=[512, 1024])
    assert (best, size) == (0.5, 512)  # a slower larger size (cache spill) does not lower the peak


def test_threads_follow_the_load_on_a_cpu():
    assert overhead_threads("auto", 1.5, CPU) == 1  # busy: one thread, no spinning peers
    assert overhead_threads("auto", 0.4, CPU) is None  # quiet: torch's default
    assert overhead_threads("auto", 1.0, CPU) is None  # "above 1"
    assert overhead_threads("auto", None, CPU) is None
    assert overhead_threads("auto", 5.0, CUDA) is None  # a GPU's step does not spin on CPU threads
    assert overhead_threads(2, 5.0, CPU) == 2  # an explicit number wins
    assert overhead_threads(None, 3.0, CPU) == 1


def test_rounds_that_disagree_by_more_than_a_fifth_are_flagged():
    assert not rounds_disagree([0.90, 0.92, 0.95, 0.91, 0.93])
    assert rounds_disagree([0.70, 0.92, 0.95, 0.91, 0.93])  # spread 0.25 of the median 0.92
    assert not rounds_disagree([0.9])
    assert rounds_disagree([1.9, 0.07, 2.5])
