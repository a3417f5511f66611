"""The classic pipeline's augmentation, applied to whole uint8 batches on the batch's device.

Hand-written because ``torchvision.transforms.v2`` given a batch tensor draws ONE set of random
parameters for the whole batch (every image flipped or none, one angle), which is a different,
noisier augmentation than the per-image one. Here every image gets its own flips, angle, jitter
factors and order of the four jitter operations (as ``v2.ColorJitter``), in two cheap passes:

- flips and rotation become one gather of uint8 pixels through a per-image index map computed
  as ``affine_grid`` + nearest ``grid_sample`` would (``v2.RandomRotation``'s defaults: nearest
  neighbour, zero fill), so the geometry equals torchvision's pixel for pixel (up to float
  rounding at exact half-pixel ties);
- brightness, contrast, saturation and hue are each an affine map of the RGB vector, so the four
  (in each image's order) compose into one 3x3 matrix and offset per image, applied with one
  batched matrix product, clamped to [0, 1] and normalised. Two differences from
  ``v2.ColorJitter``, both small at the configured strengths: clamping happens once at the end
  rather than after every step, and hue is a rotation about the grey axis (the hue-rotate matrix
  of CSS/SVG filters) rather than a shift in the HSV hexcone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
GREY = (0.2989, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclass
class AugmentParams:
    """One draw per image: what the per-image transforms would have drawn."""

    hflip: torch.Tensor  # (N,) bool
    vflip: torch.Tensor  # (N,) bool
    angle: torch.Tensor  # (N,) degrees, counter-clockwise
    brightness: torch.Tensor  # (N,) factors
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # (N,) shift in turns
    order: torch.Tensor  # (N, 4) permutation of (brightness, contrast, saturation, hue)

    def to(self, device: torch.device) -> AugmentParams:
        return AugmentParams(**{name: value.to(device) for name, value in vars(self).items()})


def _factor_range(value: float, name: str) -> tuple[float, float]:
    """``v2.ColorJitter``'s reading of a scalar strength: factors in [max(0, 1 - v), 1 + v]."""
    if value < 0:
        raise ValueError(f"data.color_jitter {name}={value} is negative; use a value >= 0.")
    return max(0.0, 1.0 - value), 1.0 + value


def sample_params(n: int, rotation: float, color_jitter: Sequence[float], horizontal_flip: float,
                  vertical_flip: float, generator: torch.Generator | None = None) -> AugmentParams:
    """Independent parameters for ``n`` images, drawn on the CPU (cheap, and reproducible)."""
    brightness, contrast, saturation, hue = color_jitter

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    return AugmentParams(
        hflip=torch.rand(n, generator=generator) < horizontal_flip,
        vflip=torch.rand(n, generator=generator) < vertical_flip,
        angle=uniform(-rotation, rotation),
        brightness=uniform(*_factor_range(brightness, "brightness")),
        contrast=uniform(*_factor_range(contrast, "contrast")),
        saturation=uniform(*_factor_range(saturation, "saturation")),
        hue=uniform(-hue, hue),
        order=torch.rand(n, 4, generator=generator).argsort(dim=1),
    )


def _padding(angle: torch.Tensor, height: int, width: int) -> int:
    """Zero border wide enough that every rotated source pixel falls inside the padded image."""
    # |cos| + |sin| grows up to 45 degrees, where it is sqrt(2), its maximum.
    degrees = min(float(angle.abs().max()) if len(angle) else 0.0, 45.0)
    reach = 0.5 * max(height, width) * (math.cos(math.radians(degrees)) + math.sin(math.radians(degrees)))
    return int(math.ceil(reach - 0.5 * min(height, width))) + 2


def source_index(params: AugmentParams, height: int, width: int, pad: int) -> torch.Tensor:
    """(N, H*W) flat source pixel, in the image padded by ``pad`` zeros on every side, of every
    output pixel after flips then rotation.

    Rotation by ``angle`` about the centre maps output offset (u, v) from the centre to source
    offset (cos u - sin v, sin u + cos v) (``affine_grid`` with align_corners=False); a flip
    negates a source offset; nearest neighbour rounds half to even, as ``grid_sample``.
    """
    radians = params.angle.float() * (math.pi / 180.0)
    cos, sin = radians.cos().view(-1, 1, 1), radians.sin().view(-1, 1, 1)
    sign_x = 1.0 - 2.0 * params.hflip.float().view(-1, 1, 1)
    sign_y = 1.0 - 2.0 * params.vflip.float().view(-1, 1, 1)
    device = radians.device
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2).view(1, 1, -1)
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2).view(1, -1, 1)
    x = torch.round(sign_x * cos * u + (-sign_x * sin * v + ((width - 1) / 2 + pad)))
    y = torch.round(sign_y * sin * u + (sign_y * cos * v + ((height - 1) / 2 + pad)))
    index = x.add_(y, alpha=width + 2 * pad)
    return index.view(len(radians), -1).long()


def flip_rotate(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Flip then rotate each uint8 image with its own parameters (one gather, no float copy)."""
    n, channels, height, width = images.shape
    pad = _padding(params.angle, height, width)
    flat = F.pad(images, (pad, pad, pad, pad)).view(n, channels, -1)
    index = source_index(params, height, width, pad).unsqueeze(1).expand(n, channels, -1)
    return flat.gather(2, index).view(n, channels, height, width)


def _rotation_about_grey(turns: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotations of RGB about the grey axis by ``turns``: red moves towards green."""
    angle = turns * (2 * math.pi)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    eye = torch.eye(3, device=turns.device)
    axis = torch.full((3, 3), 1 / 3, device=turns.device)
    root = 1 / math.sqrt(3)
    cross = torch.tensor([[0, -root, root], [root, 0, -root], [-root, root, 0]], device=turns.device)
    return cos * eye + sin * cross + (1 - cos) * axis


def jitter_affine(params: AugmentParams, mean_colour: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(A, b)`` with ``jitter(x) = A @ x + b`` for RGB vectors in [0, 1].

    ``mean_colour`` (N, 3) is each image's mean RGB, which contrast needs (it blends with the
    mean grey level at its point in the chain).
    """
    n, device = len(params.angle), mean_colour.device
    grey = torch.tensor(GREY, device=device)
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    matrix, offset = eye.clone(), torch.zeros(n, 3, device=device)
    hue = _rotation_about_grey(params.hue)
    for step in range(4):
        op = params.order[:, step].view(-1, 1, 1)
        for kind, factor in ((BRIGHTNESS, params.brightness), (CONTRAST, params.contrast),
                             (SATURATION, params.saturation)):
            f = factor.view(-1, 1, 1)
            if kind == SATURATION:
                step_matrix = f * eye + (1 - f) * grey.view(1, 1, 3).expand(n, 3, 3)
            else:
                step_matrix = f * eye
            step_offset = torch.zeros(n, 3, device=device)
            if kind == CONTRAST:
                mean_grey = ((matrix @ mean_colour.unsqueeze(2)).squeeze(2) + offset) @ grey
                step_offset = ((1 - factor) * mean_grey).unsqueeze(1).expand(n, 3)
            chosen = op == kind
            new_matrix = step_matrix @ matrix
            new_offset = (step_matrix @ offset.unsqueeze(2)).squeeze(2) + step_offset
            matrix = torch.where(chosen, new_matrix, matrix)
            offset = torch.where(chosen.view(-1, 1), new_offset, offset)
        chosen = op == HUE
        matrix = torch.where(chosen, hue @ matrix, matrix)
        offset = torch.where(chosen.view(-1, 1), (hue @ offset.unsqueeze(2)).squeeze(2), offset)
    return matrix, offset


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 batch to float32 scaled to [0, 1] and standardised per channel (the eval transform)."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255.0).sub_(mean_t)).div_(std_t)


class BatchAugment:
    """Per-image flips, rotation and colour jitter for uint8 batches, then normalisation.

    Takes the same arguments as the classic per-image pipeline (``train_transform``).
    """

    def __init__(self, rotation: float = 15.0, color_jitter: Sequence[float] = (0.2, 0.2, 0.2, 0.02),
                 horizontal_flip: float = 0.5, vertical_flip: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.rotation = float(rotation)
        self.color_jitter = tuple(float(value) for value in color_jitter)
        self.horizontal_flip = float(horizontal_flip)
        self.vertical_flip = float(vertical_flip)
        self.mean, self.std = tuple(mean), tuple(std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        return sample_params(n, self.rotation, self.color_jitter, self.horizontal_flip,
                             self.vertical_flip, generator)

    def augment(self, images: torch.Tensor, params: AugmentParams,
                mean: Sequence[float] = (0.0, 0.0, 0.0),
                std: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
        """uint8 (N, 3, H, W) in, augmented float32 out: in [0, 1], then ``(x - mean) / std``.

        The normalisation is folded into the colour matrix and the clamp bounds (one pass).
        """
        params = params.to(images.device)
        n, channels, height, width = images.shape
        pixels = flip_rotate(images, params).view(n, channels, -1).float()
        mean_colour = pixels.mean(dim=2) / 255.0
        matrix, offset = jitter_affine(params, mean_colour)
        mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1)
        std_t = torch.tensor(std, device=images.device).view(1, -1, 1)
        out = torch.baddbmm((offset.unsqueeze(2) - mean_t) / std_t, matrix / (255.0 * std_t), pixels)
        out = torch.clamp(out, min=-mean_t / std_t, max=(1 - mean_t) / std_t, out=out)
        return out.view(n, channels, height, width)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment and normalise a uint8 batch with fresh per-image parameters."""
        return self.augment(images, self.sample(len(images), generator), self.mean, self.std)
