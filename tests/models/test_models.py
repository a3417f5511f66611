"""Every architecture builds for the data set's classes and runs at any input size."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT, compose_config
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from resomap.models.zoo import PretrainedWeightsUnavailable

CONF_DIR = REPO_ROOT / "conf"
MODELS = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))


def build(model: str, num_classes: int = 7, *overrides: str) -> torch.nn.Module:
    cfg = compose_config("train", [f"model={model}", *overrides])
    return instantiate(cfg.model.net, num_classes=num_classes)


def test_all_eight_architectures_have_a_config():
    assert MODELS == sorted(["simple_cnn", "tiny_cnn", "vgg11", "vgg13", "resnet18", "resnet34",
                             "mobilenet_v2_small", "mobilenet_v3_small"])


@pytest.mark.parametrize("model", MODELS)
def test_forward_at_any_resolution(model: str):
    net = build(model).eval()
    for size in (64, 224, 300):
        with torch.no_grad():
            logits = net(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 7), (model, size)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("model", ["simple_cnn", "resnet18"])
def test_parameters_do_not_depend_on_resolution_but_on_classes(model: str):
    counts = {classes: sum(p.numel() for p in build(model, classes).parameters())
              for classes in (3, 7)}
    assert counts[3] < counts[7]


def test_simple_cnn_matches_the_seed_architecture():
    net = build("simple_cnn")
    convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [32, 64, 128, 256]
    assert linears == [512, 256, 7]


def test_mobilenet_v2_small_is_half_width():
    full = build("mobilenet_v2_small", 7, "model.net.width_mult=1.0")
    half = build("mobilenet_v2_small")
    assert sum(p.numel() for p in half.parameters()) < 0.6 * sum(p.numel() for p in full.parameters())


def test_pretrained_without_cached_weights_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(InstantiationException, match="resnet18.*model.pretrained=false") as raised:
        build("resnet18", 7, "model.pretrained=true")
    assert isinstance(raised.value.__cause__, PretrainedWeightsUnavailable)
