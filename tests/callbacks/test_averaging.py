"""Averaged weights: validation, the best checkpoint and the test all see the same averaged weights."""

from __future__ import annotations

import pytest
import torch

from resomap import orchestrate
from resomap.run import record as records
from resomap.run.trained import load_trained, read_checkpoint
from resomap.study import cross_res

pytestmark = pytest.mark.slow


def test_the_run_tests_the_averaged_weights_it_chose_on_validation_loss(compose_train):
    cfg = compose_train("trainer.max_epochs=3")
    assert cfg.callbacks.best_checkpoint.monitor == "val_loss"
    assert cfg.callbacks.weight_averaging.decay == 0.9
    orchestrate.run(cfg)
    record = records.read_record(records.view_path(cfg.paths.results_dir, cfg.run_name))
    checkpoints = record.identity.checkpoint_dir(cfg.paths.checkpoint_dir)
    saved = read_checkpoint(checkpoints / "best.ckpt")
    averaged, raw = saved["state_dict"], saved["current_model_state"]
    assert any(not torch.equal(averaged[key], raw[key]) for key in averaged if key.startswith("net."))

    # The best epoch is the one with the lowest validation loss (of the averaged weights).
    losses = [row["val_loss"] for row in record.history]
    assert saved["epoch"] == losses.index(min(losses))

    # The recorded test is the averaged weights' (the state_dict every later reader loads), not the
    # raw weights that Lightning's own callback would have restored for the test.
    splits = cross_res.TestSplits()
    images, labels = splits.get(record, record.resolution)
    model = load_trained(record, cfg.paths.checkpoint_dir)
    weights = model.hparams.get("class_weights")
    tested = cross_res.evaluate_model(model, images, labels, record.precision, weights=weights)
    model.load_state_dict(raw)
    raw_scores = cross_res.evaluate_model(model, images, labels, record.precision, weights=weights)
    assert record.test_metrics.loss == pytest.approx(tested["loss"], abs=1e-4)
    assert record.test_metrics.loss != pytest.approx(raw_scores["loss"], abs=1e-4)
