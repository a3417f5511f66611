"""Batched, per-image augmentation: the same transforms, and the same distribution, as the classic path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resomap.data import batch_augment as B
from resomap.data.datamodule import train_transform

JITTER = (0.2, 0.2, 0.2, 0.02)


def test_flips_and_rotation_equal_torchvision_per_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 33, 33), dtype=torch.uint8, generator=generator)
    params = B.sample_params(24, 15.0, JITTER, 0.5, 0.5, generator)
    expected = []
    for image, hflip, vflip, angle in zip(images, params.hflip, params.vflip, params.angle):
        image = TF.horizontal_flip(image) if hflip else image
        image = TF.vertical_flip(image) if vflip else image
        expected.append(TF.rotate(image, float(angle)))
    assert torch.equal(B.flip_rotate(images, params), torch.stack(expected))


def test_jitter_equals_torchvision_in_each_images_order():
    generator = torch.Generator().manual_seed(1)
    # Mid-range pixels: no clamping inside the chain, where the fused version could differ.
    images = torch.randint(70, 180, (16, 3, 20, 20), dtype=torch.uint8, generator=generator)
    params = B.sample_params(16, 0.0, (0.2, 0.2, 0.2, 0.0), 0.0, 0.0, generator)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    factors = (params.brightness, params.contrast, params.saturation, params.hue)
    expected = []
    for index, image in enumerate(images.float() / 255):
        for op in params.order[index].tolist():
            image = ops[op](image, float(factors[op][index]))
        expected.append(image)
    augment = B.BatchAugment(rotation=0.0, color_jitter=(0.2, 0.2, 0.2, 0.0))
    assert torch.allclose(augment.augment(images, params), torch.stack(expected), atol=1e-4)


def test_hue_turns_red_towards_green_like_adjust_hue():
    red = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 200
    red[:, 1] = 40
    params = B.sample_params(2, 0.0, (0.0, 0.0, 0.0, 0.02), 0.0, 0.0)
    params.hue = torch.tensor([0.0, 0.02])
    out = B.BatchAugment(rotation=0.0, color_jitter=(0.0, 0.0, 0.0, 0.02)).augment(red, params)
    assert torch.allclose(out[0], red[0].float() / 255, atol=1e-6)
    reference = TF.adjust_hue(red[1].float() / 255, 0.02)
    assert out[1, 1].mean() > red[1, 1].float().mean() / 255
    assert reference[1].mean() > red[1, 1].float().mean() / 255


def test_parameters_are_drawn_per_image_within_the_configured_ranges():
    params = B.sample_params(4000, 15.0, JITTER, 0.5, 0.5, torch.Generator().manual_seed(2))
    assert params.hflip.float().mean() == pytest.approx(0.5, abs=0.03)
    assert params.vflip.float().mean() == pytest.approx(0.5, abs=0.03)
    assert -15 <= params.angle.min() < -14 and 14 < params.angle.max() <= 15
    for factors in (params.brightness, params.contrast, params.saturation):
        assert 0.8 <= factors.min() < 0.81 and 1.19 < factors.max() <= 1.2
    assert params.hue.abs().max() <= 0.02
    assert sorted(params.order[0].tolist()) == [0, 1, 2, 3]
    assert len({tuple(row) for row in params.order.tolist()}) == 24  # every order occurs


def _classic(image: Image.Image, **augmentation) -> torch.Tensor:
    """The classic per-image training transform, without its normalisation."""
    transform = train_transform(image.width, **augmentation)
    std, mean = torch.tensor(B.IMAGENET_STD).view(3, 1, 1), torch.tensor(B.IMAGENET_MEAN).view(3, 1, 1)
    return transform(image) * std + mean


def test_same_distribution_of_transforms_as_the_per_image_pipeline():
    """Flip rate, rotation (through the zero-filled area) and brightness factors, both ways."""
    torch.manual_seed(0)
    n = 300
    arrow = np.zeros((16, 16, 3), dtype=np.uint8)
    arrow[:, :8] = 255  # left half white: a horizontal flip is visible
    plain = dict(rotation=0.0, color_jitter=(0.0, 0.0, 0.0, 0.0), horizontal_flip=0.5, vertical_flip=0.0)
    classic_flips = np.mean([float(_classic(Image.fromarray(arrow), **plain)[0, 0, 0]) < 0.5
                             for _ in range(n)])
    batch = torch.from_numpy(arrow).permute(2, 0, 1).expand(n, 3, 16, 16).contiguous()
    batched_flips = float((B.BatchAugment(**plain).augment(batch, B.BatchAugment(**plain).sample(n))
                           [:, 0, 0, 0] < 0.5).float().mean())
    assert classic_flips == pytest.approx(0.5, abs=0.1) and batched_flips == pytest.approx(0.5, abs=0.1)

    white = np.full((32, 32, 3), 255, dtype=np.uint8)
    rotate = dict(rotation=15.0, color_jitter=(0.0, 0.0, 0.0, 0.0), horizontal_flip=0.0, vertical_flip=0.0)
    classic_fill = np.array([float((_classic(Image.fromarray(white), **rotate) < 0.01).float().mean())
                             for _ in range(n)])
    whites = torch.full((n, 3, 32, 32), 255, dtype=torch.uint8)
    augment = B.BatchAugment(**rotate)
    batched_fill = (augment.augment(whites, augment.sample(n)) < 0.01).float().mean(dim=(1, 2, 3)).numpy()
    assert batched_fill.mean() == pytest.approx(classic_fill.mean(), rel=0.2)
    assert batched_fill.max() == pytest.approx(classic_fill.max(), rel=0.2)
    assert (batched_fill < 0.02).mean() == pytest.approx((classic_fill < 0.02).mean(), abs=0.1)

    grey = np.full((8, 8, 3), 128, dtype=np.uint8)
    bright = dict(rotation=0.0, color_jitter=(0.2, 0.0, 0.0, 0.0), horizontal_flip=0.0, vertical_flip=0.0)
    classic_factor = np.array([float(_classic(Image.fromarray(grey), **bright).mean()) / (128 / 255)
                               for _ in range(n)])
    augment = B.BatchAugment(**bright)
    greys = torch.full((n, 3, 8, 8), 128, dtype=torch.uint8)
    batched_factor = (augment.augment(greys, augment.sample(n)).mean(dim=(1, 2, 3)) / (128 / 255)).numpy()
    for factors in (classic_factor, batched_factor):
        assert 0.79 <= factors.min() < 0.83 and 1.17 < factors.max() <= 1.21
        assert factors.std() == pytest.approx(0.4 / np.sqrt(12), rel=0.15)


def test_one_batch_gets_different_transforms_unlike_v2_on_a_batch():
    torch.manual_seed(3)
    batch = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    out = B.BatchAugment()(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    flipped = B.BatchAugment(rotation=0.0, color_jitter=(0.0, 0.0, 0.0, 0.0), vertical_flip=0.0)
    unnormalised = flipped.augment(batch, flipped.sample(64)) * 255
    is_flipped = torch.isclose(unnormalised, batch.flip(-1).float(), atol=1e-3).flatten(1).all(1)
    assert 0 < is_flipped.sum() < 64
    # torchvision applied to the batch flips all images or none: the reason for BatchAugment.
    v2_flipped = v2.RandomHorizontalFlip(0.5)(batch)
    assert torch.equal(v2_flipped, batch) or torch.equal(v2_flipped, batch.flip(-1))


def test_padding_from_the_configured_bound_gives_the_same_pixels():
    """The zero border sized from the configured rotation (no wait for the device) changes nothing."""
    generator = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (12, 3, 37, 37), dtype=torch.uint8, generator=generator)
    params = B.sample_params(12, 15.0, JITTER, 0.5, 0.5, generator)
    assert torch.equal(B.flip_rotate(images, params, max_degrees=15.0), B.flip_rotate(images, params))
    assert B._padding(15.0, 37, 37) >= B._padding(float(params.angle.abs().max()), 37, 37)


def test_parameters_are_drawn_where_asked_in_one_reproducible_call():
    first = B.sample_params(6, 15.0, JITTER, 0.5, 0.5, torch.Generator().manual_seed(6), device="cpu")
    again = B.sample_params(6, 15.0, JITTER, 0.5, 0.5, torch.Generator().manual_seed(6), device="cpu")
    assert all(torch.equal(getattr(first, name), getattr(again, name)) for name in vars(first))
    assert first.angle.device.type == "cpu" and first.order.shape == (6, 4)
    with pytest.raises(ValueError, match="contrast=-0.1 is negative"):
        B.BatchAugment(color_jitter=(0.2, -0.1, 0.2, 0.02))
