"""The stage metrics derived from confusion counts are torchmetrics' multiclass metrics."""

from __future__ import annotations

import pytest
import torch
import torchmetrics.functional as tm

from resomap.models.classifier import confusion_metrics


@pytest.mark.parametrize("seed", range(6))
def test_metrics_from_confusion_counts_equal_torchmetrics(seed):
    generator = torch.Generator().manual_seed(seed)
    classes = 7
    targets = torch.randint(0, classes - (seed % 3), (60,), generator=generator)  # some classes absent
    predictions = torch.randint(0, classes - ((seed + 1) % 3), (60,), generator=generator)
    confusion = tm.confusion_matrix(predictions, targets, task="multiclass", num_classes=classes)
    derived = confusion_metrics(confusion)
    task = {"task": "multiclass", "num_classes": classes}
    expected = {
        "accuracy": tm.accuracy(predictions, targets, **task, average="micro"),
        "balanced_accuracy": tm.recall(predictions, targets, **task, average="macro"),
        "precision": tm.precision(predictions, targets, **task, average="macro"),
        "recall": tm.recall(predictions, targets, **task, average="macro"),
        "f1": tm.f1_score(predictions, targets, **task, average="macro"),
    }
    for name, value in expected.items():
        assert float(derived[name]) == pytest.approx(float(value), abs=1e-6), name
    per_class = tm.recall(predictions, targets, **task, average=None)
    assert derived["per_class_recall"].float().tolist() == pytest.approx(per_class.tolist(), abs=1e-6)
