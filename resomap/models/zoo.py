"""torchvision architectures, built for the data set's class count without downloads."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


class PretrainedWeightsUnavailable(RuntimeError):
    """Raised when ``pretrained=true`` asks for weights that are not on this machine."""


def torchvision_model(arch: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build ``torchvision.models.<arch>`` with a ``num_classes`` head.

    With ``pretrained=true`` the ImageNet weights are read from torch's hub cache only:
    a run never downloads. Every layer but the classifier head is loaded from them.
    """
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    if pretrained:
        model.load_state_dict(_cached_backbone_weights(arch, model), strict=False)
    return model


def _cached_backbone_weights(arch: str, model: nn.Module) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise PretrainedWeightsUnavailable(
            f"model.pretrained=true: the ImageNet weights of {arch} are not on this machine "
            f"(looked for {path}). ResoMap never downloads at run time: copy {weights.url} "
            "to that path, or train from scratch with model.pretrained=false."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    return {key: value for key, value in state.items()
            if key in own and own[key].shape == value.shape}
