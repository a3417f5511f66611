"""The train x test resolution matrix, and records read as data, never as code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from resomap import orchestrate
from resomap.run import record as records
from resomap.run.trained import UntrustedRecordError, datamodule_for, load_trained
from resomap.study import cross_res

pytestmark = pytest.mark.slow


@pytest.fixture
def two_runs(compose_train) -> tuple[Path, list[records.RunRecord]]:
    """tiny_cnn trained at 32 and 40 px on the tiny data set, in one project folder."""
    found = []
    for res in (32, 40):
        cfg = compose_train(f"res={res}", "trainer.max_epochs=2")
        orchestrate.run(cfg)
        found.append(records.read_record(records.view_path(cfg.paths.results_dir, cfg.run_name)))
    return Path(cfg.paths.results_dir), found


def test_each_run_is_tested_at_the_other_resolution_and_cached(two_runs):
    results_dir, runs = two_runs
    matrix = cross_res.build(runs, results_dir, [32, 40]).matrix("tiny_cnn")
    assert set(matrix) == {32, 40} and all(set(row) == {32, 40} for row in matrix.values())
    for run in runs:
        assert matrix[run.resolution][run.resolution] == pytest.approx(run.test_metrics.balanced_accuracy)
        cached = json.loads(cross_res.cache_path(results_dir, run.run_name).read_text())
        assert cached["identity"] == run.identity.digest
    # A second build reads the cache: with evaluation off, the same matrix comes back.
    assert cross_res.build(runs, results_dir, [32, 40], evaluate_missing=False).matrix("tiny_cnn") == matrix


def test_a_project_addressed_from_its_own_folder_is_tested_at_the_other_resolution(two_runs, monkeypatch):
    # The demo's default: paths relative to the folder the command runs in (./results, ./checkpoints).
    results_dir, runs = two_runs
    monkeypatch.chdir(results_dir.parent)
    found = cross_res.build(runs, Path("results"), [32, 40])
    assert found.notes == []
    matrix = found.matrix("tiny_cnn")
    assert all(set(row) == {32, 40} for row in matrix.values())
    assert load_trained(runs[0], Path("checkpoints")).hparams["num_classes"] == 7


def test_a_relative_image_cache_in_a_record_is_the_project_s_own(two_runs, monkeypatch):
    results_dir, runs = two_runs
    project = results_dir.parent
    monkeypatch.chdir(project)
    config = json.loads(json.dumps(runs[0].config))
    config["data"].update(pipeline="cached", cache_dir="data/cache")
    datamodule = datamodule_for(dataclasses.replace(runs[0], config=config), 32, cache_root="data/cache")
    assert (datamodule.pipeline, Path(datamodule.cache_dir)) == ("cached", project / "data" / "cache")


def test_the_matrix_evaluation_agrees_with_the_runs_own_test(two_runs):
    results_dir, runs = two_runs
    splits = cross_res.TestSplits()
    for run in runs:
        model = load_trained(run, results_dir.parent / "checkpoints")
        images, labels = splits.get(run, run.resolution)
        measured = cross_res.evaluate_model(model, images, labels, run.precision,
                                            weights=model.hparams.get("class_weights"))
        assert measured["balanced_accuracy"] == pytest.approx(run.test_metrics.balanced_accuracy, abs=1e-6)
        assert measured["accuracy"] == pytest.approx(run.test_metrics.accuracy, abs=1e-6)
        assert measured["num_images"] == run.test_metrics.num_images


@pytest.mark.parametrize("where", ["top", "nested"])
def test_a_record_naming_foreign_code_is_refused_and_calls_nothing(two_runs, tmp_path, where):
    results_dir, runs = two_runs
    canary = tmp_path / "canary.txt"
    opener = {"_target_": "builtins.open", "file": str(canary), "mode": "w"}
    config = json.loads(json.dumps(runs[0].config))
    if where == "top":
        config["model"]["net"] = {**opener, "num_classes": 7}
    else:
        config["model"]["net"]["dropout"] = opener
    forged = dataclasses.replace(runs[0], config=config)
    with pytest.raises(UntrustedRecordError):
        load_trained(forged, results_dir.parent / "checkpoints")
    found = cross_res.build([forged, runs[1]], results_dir / "elsewhere", [32, 40],
                            checkpoints_root=results_dir.parent / "checkpoints")
    assert not canary.exists()
    assert any(f"{forged.run_name} not tested at 40 px" in note for note in found.notes)
    assert (40, 32) in {(train, test) for _, train, _, test, _ in found.entries}  # the rest goes on


def test_neighbour_cells_are_the_adjacent_resolutions():
    grid = [224, 256, 320, 384, 512]
    assert cross_res.test_resolutions(224, grid) == [256]
    assert cross_res.test_resolutions(320, grid) == [256, 384]
    assert cross_res.test_resolutions(512, grid) == [384]
    assert cross_res.test_resolutions(320, grid, neighbours=2) == [224, 256, 384, 512]
    assert cross_res.test_resolutions(320, grid, neighbours=None) == [224, 256, 384, 512]
    assert cross_res.test_resolutions(320, grid, neighbours=0) == []
    # A run trained off the grid is tested at the sizes on either side of it.
    assert cross_res.test_resolutions(300, grid) == [256, 320]
    # The demo: 2 models x 5 sizes cost 16 evaluations instead of 40.
    assert 2 * sum(len(cross_res.test_resolutions(res, grid)) for res in grid) == 16


def test_a_run_is_evaluated_only_at_its_neighbours(compose_train):
    runs = []
    for res in (32, 40, 48):
        cfg = compose_train(f"res={res}", "trainer.max_epochs=1")
        orchestrate.run(cfg)
        runs.append(records.read_record(records.view_path(cfg.paths.results_dir, cfg.run_name)))
    results_dir = Path(cfg.paths.results_dir)
    matrix = cross_res.build(runs, results_dir, [32, 40, 48]).matrix("tiny_cnn")
    assert {train: sorted(row) for train, row in matrix.items()} == {32: [32, 40], 40: [32, 40, 48],
                                                                     48: [40, 48]}
    # Asking for every cell later evaluates only the missing ones and keeps the cached ones.
    cached = json.loads(cross_res.cache_path(results_dir, runs[0].run_name).read_text())["evaluations"]
    full = cross_res.build(runs, results_dir, [32, 40, 48], neighbours=None).matrix("tiny_cnn")
    assert sorted(full[32]) == [32, 40, 48] and full[32][40] == cached["40"]["balanced_accuracy"]


def test_a_cache_path_from_an_unsafe_run_name_is_refused(tmp_path):
    from resomap.names import UnsafeName

    with pytest.raises(UnsafeName):
        cross_res.cache_path(tmp_path, "../../etc/x")
    assert cross_res.cache_path(tmp_path, "tiny_cnn_32").parent == (tmp_path / "cross_res").resolve()
