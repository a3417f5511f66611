"""Attribution methods (captum) that turn a batch of images into one map per image.

Every method returns non-negative float32 maps of shape ``(N, H, W)``, the input's
spatial size, so maps of different methods and resolutions compare directly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn
from torchvision.transforms.v2 import functional as TF

from resomap.data.datamodule import IMAGENET_MEAN, IMAGENET_STD
from resomap.errors import ConfigError


class LayerNotFoundError(ValueError):
    """The configured Grad-CAM layer is not a submodule of the network."""


def find_gradcam_layer(net: nn.Module, image_size: int = 64) -> str:
    """Dotted name of the module that ends the network's convolutional part.

    Traces one forward pass and returns the last module to finish that is or contains
    a ``Conv2d`` and outputs a 4-D feature map: ``features`` for VGG, MobileNet and the
    simple CNNs, ``layer4`` for ResNets (the layers Grad-CAM is usually applied to).
    Hooks on a real forward pass find it for any architecture, without a name table.
    """
    finished: list[str] = []
    has_conv = {name: any(isinstance(m, nn.Conv2d) for m in module.modules())
                for name, module in net.named_modules() if name}

    def hook(name: str) -> Callable:
        def record(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and has_conv[name]:
                finished.append(name)
        return record

    handles = [module.register_forward_hook(hook(name))
               for name, module in net.named_modules() if name]
    was_training = net.training
    try:
        net.eval()
        parameter = next(net.parameters())
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size, device=parameter.device))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    if not finished:
        raise LayerNotFoundError(
            f"No convolutional layer found in {type(net).__name__}: Grad-CAM needs one. Set "
            "callbacks.explain.methods.grad_cam.layer to the dotted name of a module whose output "
            "is a feature map, or remove grad_cam from callbacks.explain.methods."
        )
    return finished[-1]


def get_layer(net: nn.Module, path: str) -> nn.Module:
    """``net``'s submodule at dotted ``path``, with a clear error naming valid choices."""
    try:
        return net.get_submodule(path)
    except AttributeError as error:
        children = ", ".join(name for name, _ in net.named_children())
        raise LayerNotFoundError(
            f"callbacks.explain.methods.grad_cam.layer={path!r} is not a module of "
            f"{type(net).__name__}. Use a dotted path such as 'features' or 'layer4.1' starting "
            f"from one of: {children}; or null to pick the last convolutional stage automatically."
        ) from error


def _pixel_map(attributions: torch.Tensor) -> torch.Tensor:
    """Per-pixel importance: absolute attribution summed over the colour channels."""
    return attributions.detach().abs().sum(dim=1).float()


class GradCam:
    """Grad-CAM (Selvaraju et al. 2017) on ``layer`` (dotted path; None: found automatically),
    upsampled bilinearly to the input size. Negative evidence is clipped (ReLU), as in the paper."""


    def __init__(self, layer: str | None = None) -> None:
        self.layer = layer

    def layer_name(self, net: nn.Module, image_size: int) -> str:
        return self.layer or find_gradcam_layer(net, image_size)

    def settings(self, net: nn.Module, image_size: int) -> dict:
        return {"layer": self.layer_name(net, image_size)}

    def __call__(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        layer = get_layer(net, self.layer_name(net, images.shape[-1]))
        cam = LayerGradCam(net, layer).attribute(images, target=targets, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach().float(), tuple(images.shape[-2:]), "bilinear")
        return cam.squeeze(1).clamp_min(0)


def black_baseline(images: torch.Tensor) -> torch.Tensor:
    """A black image (pixel value 0), expressed in the normalised input space."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((0 - mean) / std).expand_as(images).contiguous()


def zeros_baseline(images: torch.Tensor) -> torch.Tensor:
    """Zeros in the normalised space: the data set's mean colour everywhere."""
    return torch.zeros_like(images)


def blurred_baseline(images: torch.Tensor, sigma_fraction: float = 0.04) -> torch.Tensor:
    """The image blurred with a Gaussian whose width is a fixed fraction of the image side,
    so the baseline removes the same detail at every resolution."""
    side = images.shape[-1]
    sigma = max(sigma_fraction * side, 0.5)
    kernel = min(2 * round(3 * sigma) + 1, 2 * (min(images.shape[-2:]) // 2) - 1)
    return TF.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


BASELINES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "black": black_baseline, "zeros": zeros_baseline, "blur": blurred_baseline,
}


class IntegratedGradientsMethod:
    """Integrated Gradients (Sundararajan et al. 2017) from ``baseline`` (black, zeros or blur)
    with ``n_steps`` Gauss-Legendre steps, ``internal_batch_size`` images per pass.

    Completeness (the paper's check): the attributions of an image should sum to the target
    output's change from baseline to image. :meth:`attribute_with_completeness` also returns
    captum's convergence delta (sum of attributions minus that change) and the change itself,
    so the caller reports the error relative to the change and warns above ``tolerance``
    (the paper asks for 5%).
    """

    def __init__(self, baseline: str = "black", n_steps: int = 16,
                 internal_batch_size: int | None = 16, tolerance: float = 0.05) -> None:
        if baseline not in BASELINES:
            raise ConfigError(
                f"callbacks.explain.methods.integrated_gradients.baseline={baseline!r} is not "
                f"known; valid baselines: {', '.join(BASELINES)}."
            )
        if n_steps < 1:
            raise ConfigError(f"callbacks.explain.methods.integrated_gradients.n_steps={n_steps}: "
                             "needs at least 1 step.")
        self.baseline = baseline
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.tolerance = tolerance

    def settings(self, net: nn.Module, image_size: int) -> dict:
        return {"baseline": self.baseline, "n_steps": self.n_steps, "completeness_tolerance": self.tolerance}

    def attribute_with_completeness(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor
                                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Maps, and per image the convergence delta and the target output's change
        ``f(image) - f(baseline)`` that the attributions should sum to."""
        baselines = BASELINES[self.baseline](images)
        attributions, delta = IntegratedGradients(net).attribute(
            images, baselines=baselines, target=targets, n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            rows = torch.arange(len(targets), device=images.device)
            change = net(images)[rows, targets] - net(baselines)[rows, targets]
        return _pixel_map(attributions), delta.detach().float(), change.detach().float()

    def __call__(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.attribute_with_completeness(net, images, targets)[0]


class SaliencyMethod:
    """Vanilla gradient saliency (Simonyan et al. 2014): |d logit / d pixel|."""


    def settings(self, net: nn.Module, image_size: int) -> dict:
        return {}

    def __call__(self, net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _pixel_map(Saliency(net).attribute(images, target=targets, abs=True))


def randomised_copy(net: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``net`` with every parameter re-initialised (Adebayo et al. 2018's model
    randomisation test); the global random state is left untouched."""
    clone = copy.deepcopy(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone.eval()
