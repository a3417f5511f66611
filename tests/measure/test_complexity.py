"""FLOPs, multiply-adds, parameters and memory, checked against published and independent counts."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import REPO_ROOT, compose_config
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from resomap.measure.complexity import analyse, architecture_summary, fvcore_macs

CONF = REPO_ROOT / "conf"
MODELS = sorted(path.stem for path in (CONF / "model").glob("*.yaml"))
SQUARE = (512 / 224) ** 2
# The module after each network's adaptive pool. Everything before it is convolutional, so its
# cost scales with the pixel count; the head's cost does not depend on resolution. The head is
# large for VGG (119.6 M multiply-adds, 1.6% of vgg11 at 224) and small elsewhere
# (simple_cnn 2.2 M of 745 M); mobilenet_v3_small's squeeze-excitation layers are also
# resolution-independent, which the 5% margin covers.
HEAD = {"resnet18": "fc", "resnet34": "fc"}


def build(name: str, num_classes: int = 7) -> torch.nn.Module:
    model = compose_config(None, [f"+model={name}"]).model
    return instantiate(model.net, num_classes=num_classes).eval()


@pytest.fixture(scope="module")
def macs_by_module() -> dict[str, dict[int, dict[str, int]]]:
    """fvcore FLOPs per module of every configured model at 224 and 512 px."""
    found = {}
    for name in MODELS:
        net = build(name)
        with torch.no_grad():
            found[name] = {size: dict(fvcore_macs(net, torch.randn(1, 3, size, size)).by_module())
                           for size in (224, 512)}
    return found


def test_resnet18_matches_the_published_figure():
    complexity = analyse(torchvision.models.resnet18(num_classes=1000), 224)
    assert complexity.macs == pytest.approx(1.82e9, rel=0.02)
    assert complexity.params_total == complexity.params_trainable == 11_689_512


def test_fvcore_counts_half_of_flop_counter_mode():
    """fvcore: one multiply-add is one FLOP; FlopCounterMode counts two."""
    net = torchvision.models.resnet18(num_classes=1000).eval()
    inputs = torch.randn(1, 3, 224, 224)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(inputs)
    with torch.no_grad():
        fvcore = fvcore_macs(net, inputs).total()
    assert counter.get_total_flops() / fvcore == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("name", MODELS)
def test_convolutional_part_scales_with_pixel_count(name, macs_by_module):
    at = macs_by_module[name]
    head = HEAD.get(name, "classifier")
    body = {size: at[size][""] - at[size][head] for size in at}
    assert body[512] / body[224] == pytest.approx(SQUARE, rel=0.05)
    assert at[512][head] == at[224][head]
    # The heads are small enough that whole networks also scale within 5% at these sizes.
    assert at[512][""] / at[224][""] == pytest.approx(SQUARE, rel=0.05)


def test_params_do_not_depend_on_resolution_and_memory_grows():
    net = build("tiny_cnn")
    small, large = analyse(net, 64), analyse(net, 128)
    assert small.params_total == large.params_total == sum(p.numel() for p in net.parameters())
    assert large.macs > small.macs > 0
    assert large.mult_adds > small.mult_adds > 0
    assert large.activation_bytes == pytest.approx(4 * small.activation_bytes, rel=0.05)
    assert net.training is False
    section = small.section()
    assert section["skipped_ops"] == ["aten::max_pool2d"]
    assert "one multiply-add counts as one" in section["conventions"]["macs"]


def test_in_place_results_are_counted_once():
    """ReLU(inplace) writes into its input: the activation estimate counts that tensor once."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
                              torch.nn.Flatten())
    complexity = analyse(net, 16)
    assert complexity.activation_bytes == 8 * 16 * 16 * 4
    assert [layer.output_shape for layer in complexity.layers] == [(1, 8, 16, 16), (1, 8, 16, 16),
                                                                    (1, 2048)]


def test_architecture_summary_lists_layers_and_totals():
    net = build("tiny_cnn")
    text = architecture_summary("tiny_cnn", 7, analyse(net, 64))
    assert "features.0.0 (Conv2d)" in text and "[1, 16, 64, 64]" in text
    for line in ("Total params: 155,799", "Total mult-adds (G):", "Estimated total size (MB):",
                 "Ops fvcore does not count: aten::max_pool2d x3"):
        assert line in text
