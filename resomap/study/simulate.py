"""Simulated training runs on images with a planted resolution effect, to validate the study.

The generator draws small grey images of ``classes`` classes. All but the last two classes
differ in the brightness of a soft blob (levels overlap through a per-image jitter, so no
resolution classifies them perfectly). The last class is the one before it plus a fine
checkerboard of ``cell`` px cells inside the blob: a texture of known spatial frequency, the
only thing that tells those two classes apart. The images are resized with the training
pipeline's own antialiased resize (:func:`resomap.data.cache.resize`); below the size where the
checkerboard's period exceeds the Nyquist limit the resize erases it, so those resolutions are
truly worse (two classes merge) and the others carry the same information. How much of the
texture each resolution keeps is measured through that resize (:func:`kept_contrast`), not
assumed.

A "run" is one tiny CNN (a 4x4 stride-4 patchify convolution, ReLU, global average pooling, a
linear head) trained from its own seed, which sets its initialisation, its data order and its
augmentation (random horizontal and vertical flips). Many runs are trained at once: every
tensor carries a leading model axis and the loss is the sum of the models' own losses, so each
model's gradient depends on its own weights and batches only, and Adam (element-wise) updates
each model as if it were trained alone (tests/study/test_validate.py checks that a run's
predictions do not depend on the runs trained beside it). Not Lightning: a validation trains
thousands of such runs in minutes on two CPU cores, which a Trainer per run (its setup alone
costs more than a whole run here) cannot do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from resomap.data.cache import resize
from resomap.errors import ResoMapError
from resomap.study.bootstrap import Predictions

PATCH = 4  # the stem's kernel and stride (px): every resolution must be a multiple of it
# Texture kept by the resize (standard deviation of the resized checkerboard over the source's):
# at most ERASED below the cut, at least KEPT above it. A resolution in between keeps an aliased
# remnant that makes the truth a matter of degree: it is refused (see check_resolutions).
ERASED, KEPT = 0.05, 0.25


@dataclass(frozen=True)
class Planted:
    """The generator's settings (``planted.*`` in conf/validate.yaml)."""

    size: int = 32  # source images are size x size px
    classes: int = 5  # the last class is the one before it plus the checkerboard
    cell: int = 2  # checkerboard cell (px at the source size): its period is 2 * cell
    contrast: float = 0.4  # checkerboard amplitude (the blob levels span 0.2 to 1.0)
    jitter: float = 0.07  # standard deviation of each image's blob level (class overlap)
    noise: float = 0.2  # standard deviation of the pixel noise

    @property
    def nyquist_cut(self) -> float:
        """Below this resolution (px) the checkerboard's period is under 2 px: the resize erases it."""
        return self.size / self.cell

    @property
    def levels(self) -> np.ndarray:
        """Blob level of each class; the last two classes share one."""
        plain = np.linspace(0.2, 1.0, self.classes - 1)
        return np.append(plain, plain[-1])


def checkerboard(size: int, cell: int) -> torch.Tensor:
    """A +-1 checkerboard of ``cell`` px cells on a ``size`` px grid, aligned with the pixels."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy // cell + xx // cell) % 2) * 2 - 1).float()


def kept_contrast(planted: Planted, resolution: int) -> float:
    """Share of the checkerboard's contrast left after the pipeline's resize to ``resolution``."""
    board = checkerboard(planted.size, planted.cell)[None, None]
    return float(resize(resolution)(board).std() / board.std())


def check_resolutions(planted: Planted, resolutions: Sequence[int]) -> dict[int, float]:
    """Each resolution's kept contrast; a :class:`ResoMapError` for resolutions the planted
    answer cannot score (not a multiple of the stem's stride, above the source size, or in the
    band where the resize leaves an aliased remnant), or a set without a resolution on each
    side of the cut."""
    kept = {}
    for res in resolutions:
        if isinstance(res, bool) or not isinstance(res, int) or not PATCH <= res <= planted.size \
                or res % PATCH:
            raise ResoMapError(
                f"resolutions: {res!r} is not valid: each resolution must be a multiple of {PATCH} px (the "
                f"simulated CNN's stride) between {PATCH} and planted.size={planted.size}.")
        kept[res] = kept_contrast(planted, res)
        if ERASED < kept[res] < KEPT:
            raise ResoMapError(
                f"resolutions: {res} px keeps {kept[res]:.0%} of the planted texture, between erased "
                f"(<= {ERASED:.0%}) and kept (>= {KEPT:.0%}): its true rank is a matter of degree, so the "
                f"planted answer cannot score it. Choose resolutions clearly below or above the cut at "
                f"{planted.nyquist_cut:g} px (planted.size / planted.cell).")
    if len(set(resolutions)) != len(resolutions) or len(resolutions) < 2:
        raise ResoMapError(f"resolutions={list(resolutions)} is not valid: two or more distinct sizes.")
    if not any(v <= ERASED for v in kept.values()) or not any(v >= KEPT for v in kept.values()):
        raise ResoMapError(
            f"resolutions={list(resolutions)} is not valid: the study needs at least one resolution "
            f"below the cut at {planted.nyquist_cut:g} px (texture erased) and one above it (kept); "
            f"kept contrast: {', '.join(f'{r} px {v:.0%}' for r, v in kept.items())}.")
    return kept


def planted_answer(kept: dict[int, float]) -> int:
    """The resolution a correct study recommends: the smallest one that keeps the texture."""
    return min(res for res, value in kept.items() if value >= KEPT)


def make_images(planted: Planted, per_class: int, seed: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
    """``per_class`` images of every class at the source size (N, 1, size, size) and their labels,
    drawn from ``numpy.random.default_rng(seed)``: a set is a pure function of its seed."""
    rng = np.random.default_rng(list(seed))
    size, n = planted.size, per_class * planted.classes
    labels = np.repeat(np.arange(planted.classes), per_class)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = (rng.uniform(0.35, 0.65, (2, n, 1, 1)) * size).astype(np.float32)
    radius = np.float32(0.3 * size)
    blob = 1 / (1 + np.exp(np.hypot(xx - cx, yy - cy) - radius))  # a soft disk, edge about 2 px
    level = planted.levels[labels] + rng.normal(0, planted.jitter, n)
    # Background: smooth shading from a 4 x 4 grid, bicubically upsampled.
    coarse = torch.from_numpy(rng.normal(0, 0.08, (n, 1, 4, 4)).astype(np.float32))
    shading = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0].numpy()
    textured = (labels == planted.classes - 1)[:, None, None]
    texture = planted.contrast * checkerboard(size, planted.cell).numpy() * textured
    image = shading + blob * (level[:, None, None] + texture) + rng.normal(0, planted.noise, (n, size, size))
    return torch.from_numpy(image.astype(np.float32))[:, None], labels


def resized(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """The images at ``resolution`` through the training pipeline's antialiased resize."""
    return resize(resolution)(images) if resolution != images.shape[-1] else images


def patches(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Standardised images cut into the stem's non-overlapping 4 x 4 patches: (N, L, 16)."""
    n, _, h, w = images.shape
    x = ((images - mean) / std).view(n, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 1, 3, 2, 4).reshape(n, (h // PATCH) * (w // PATCH), PATCH * PATCH)


# Flipping an image flips every 4 x 4 patch (and moves it, which global pooling ignores): the
# same as permuting the 16 taps of the patch, or of the kernel. Index 0: none, 1: horizontal,
# 2: vertical, 3: both.
_TAPS = torch.arange(PATCH * PATCH).view(PATCH, PATCH)
FLIPS = torch.stack([_TAPS, _TAPS.flip(1), _TAPS.flip(0), _TAPS.flip(0).flip(1)]).view(4, -1)


@dataclass(frozen=True)
class Training:
    """How every simulated run trains (``training.*`` in conf/validate.yaml)."""

    channels: int = 8
    epochs: int = 12
    batch_size: int = 32
    lr: float = 0.03
    weight_decay: float = 0.0


@dataclass
class Models:
    """The weights of several runs, stacked on a leading model axis, and their input scaling."""

    stem: torch.Tensor  # (G, C, 16)
    stem_bias: torch.Tensor  # (G, C)
    head: torch.Tensor  # (G, C, K)
    head_bias: torch.Tensor  # (G, K)
    mean: float
    std: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each model on the same patches ``x`` (N, L, 16): (G, N, K)."""
        g, c, _ = self.stem.shape
        response = torch.relu(x @ self.stem.reshape(g * c, -1).T + self.stem_bias.reshape(-1))  # (N, L, G*C)
        features = response.mean(1).view(-1, g, c)  # (N, G, C)
        return torch.einsum("ngc,gck->gnk", features, self.head) + self.head_bias[:, None]

    @staticmethod
    def concat(parts: Sequence[Models]) -> Models:
        """The models of ``parts`` in order (all trained on the same images)."""
        return Models(*(torch.cat([getattr(p, name) for p in parts])
                        for name in ("stem", "stem_bias", "head", "head_bias")), parts[0].mean, parts[0].std)

    def select(self, index: Sequence[int]) -> Models:
        """The models at ``index``, in that order."""
        i = torch.as_tensor(list(index))
        return Models(self.stem[i], self.stem_bias[i], self.head[i], self.head_bias[i], self.mean, self.std)


def _init(seed: int, channels: int, classes: int) -> list[torch.Tensor]:
    """A run's initial weights, drawn like torch.nn's defaults (uniform, 1 / sqrt(fan_in))."""
    gen = torch.Generator().manual_seed(seed)
    fan = PATCH * PATCH

    def uniform(*shape: int, fan_in: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1) / fan_in**0.5

    return [uniform(channels, fan, fan_in=fan), uniform(channels, fan_in=fan),
            uniform(channels, classes, fan_in=channels), uniform(classes, fan_in=channels)]


def _schedule(seed: int, n: int, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """A run's data order (epochs, n) and flips (epochs, n), both from its seed alone."""
    rng = np.random.default_rng([seed, 1])
    order = np.stack([rng.permutation(n) for _ in range(epochs)])
    return order, rng.integers(0, 4, (epochs, n))


def train(images: torch.Tensor, labels: np.ndarray, seeds: Sequence[int], classes: int,
          training: Training) -> Models:
    """Train one run per seed on ``images`` (N, 1, H, W) at their resolution, all at once."""
    mean, std = float(images.mean()), float(images.std())
    x = patches(images, mean, std)
    y = torch.as_tensor(labels, dtype=torch.long)
    n, g, c = x.shape[0], len(seeds), training.channels
    weights = [torch.stack(ws).requires_grad_() for ws in zip(*(_init(s, c, classes) for s in seeds))]
    stem, stem_bias, head, head_bias = weights
    schedules = [_schedule(s, n, training.epochs) for s in seeds]
    order = torch.as_tensor(np.stack([o for o, _ in schedules], 1))  # (E, G, N)
    flips = torch.as_tensor(np.stack([f for _, f in schedules], 1))  # (E, G, N)
    optimizer = torch.optim.Adam(weights, lr=training.lr, weight_decay=training.weight_decay)
    for epoch in range(training.epochs):
        for start in range(0, n, training.batch_size):
            index = order[epoch, :, start:start + training.batch_size]  # (G, B)
            taps = FLIPS[flips[epoch, :, start:start + training.batch_size]]  # (G, B, 16)
            # Each sample's flip applied to the kernel instead of the image (see FLIPS).
            kernel = torch.gather(stem[:, None].expand(-1, index.shape[1], -1, -1), 3,
                                  taps[:, :, None].expand(-1, -1, c, -1))  # (G, B, C, 16)
            response = torch.relu(x[index] @ kernel.transpose(2, 3) + stem_bias[:, None, None])
            logits = torch.einsum("gbc,gck->gbk", response.mean(2), head) + head_bias[:, None]
            # Sum over models of each model's mean loss: gradients stay per model.
            loss = F.cross_entropy(logits.flatten(0, 1), y[index].flatten(), reduction="none")
            loss = loss.view(g, -1).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return Models(*(w.detach() for w in weights), mean, std)


def predict(models: Models, images: torch.Tensor, labels: np.ndarray, chunk: int = 512) -> list[Predictions]:
    """Every model's predictions on the test ``images`` (N, 1, H, W) with their ``labels``."""
    with torch.no_grad():
        x = patches(images, models.mean, models.std)
        probabilities = torch.cat([torch.softmax(models.logits(x[i:i + chunk]), -1)
                                   for i in range(0, x.shape[0], chunk)], 1)
    return [Predictions(labels, p.argmax(-1).numpy(), p.double().numpy()) for p in probabilities]
