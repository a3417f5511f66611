"""Costs paid once per configuration: a run of an added seed skips profiling passes and explanations."""

from __future__ import annotations

import pytest

from resomap import orchestrate
from resomap.run import record as records

pytestmark = pytest.mark.slow

CHEAP = ("explain=default", "callbacks.explain.num_images=2", "callbacks.explain.overlays=false",
         "callbacks.explain.methods.integrated_gradients.n_steps=2", "callbacks.profile.batch_size=4")


def _record(compose_train, *overrides):
    cfg = compose_train(*CHEAP, *overrides)
    orchestrate.run(cfg)
    return records.read_record(records.view_path(cfg.paths.results_dir, cfg.run_name))


def test_added_seed_skips_profiling_passes_and_explanations(compose_train):
    first = _record(compose_train, "seed=0")
    added = _record(compose_train, "seed=1")

    assert first.profiling["avg_time_sec"] > 0 and first.complexity["macs"] > 0
    assert first.explain["methods"] and len(first.explain["images"]) == 2
    # The added seed keeps what its own training measured, and the machine it ran on...
    assert added.profiling["training"]["fit_wall_time_sec"] > 0
    assert added.profiling["machine"]["cpu"] == first.profiling["machine"]["cpu"]
    assert added.profiling["measured_on_seeds"] == [0]
    # ...and pays for none of the per-configuration figures.
    assert "avg_time_sec" not in added.profiling and "latency" not in added.profiling
    assert not added.complexity and not added.explain
    assert "explain_sec" not in added.timing


def test_every_seed_measures_when_seeds_is_null(compose_train):
    added = _record(compose_train, "seed=1", "callbacks.profile.seeds=null", "callbacks.explain.seeds=null")
    assert added.profiling["avg_time_sec"] > 0 and added.complexity["macs"] > 0
    assert added.explain["methods"]
