"""The seed study's two baseline CNNs, rebuilt to accept any input size."""

from __future__ import annotations

from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class _PooledCNN(nn.Module):
    """Conv blocks, an adaptive average pool and a small MLP head."""

    def __init__(self, widths: tuple[int, ...], pooled_size: int, hidden: tuple[int, ...],
                 num_classes: int, dropout: float) -> None:
        super().__init__()
        channels = (3, *widths)
        self.features = nn.Sequential(*(_conv_block(i, o) for i, o in zip(channels, channels[1:])))
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        layers: list[nn.Module] = [nn.Flatten()]
        width = widths[-1] * pooled_size * pooled_size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


class SimpleCNN(_PooledCNN):
    """Four conv blocks (32-64-128-256), 4x4 adaptive pool, FC 512-256, dropout 0.3."""

    def __init__(self, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__((32, 64, 128, 256), 4, (512, 256), num_classes, dropout)


class TinyCNN(_PooledCNN):
    """Three conv blocks (16-32-64), 4x4 adaptive pool, FC 128, dropout 0.3."""

    def __init__(self, num_classes: int, dropout: float = 0.3) -> None:
        super().__init__((16, 32, 64), 4, (128,), num_classes, dropout)
