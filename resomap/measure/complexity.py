"""What a network costs at one input size: multiply-adds, parameters, activation memory.

``macs`` come from fvcore's ``FlopCountAnalysis``, which calls its count "flops" but counts one
multiply-add as one (torchvision resnet18 at 224 px: 1.82 GMACs, i.e. 3.64 GFLOPs); ResoMap
names the figure by what it holds, multiply-accumulates, as timm's benchmark says GMACs.
``mult_adds`` come from a second, independent count, ``torch.utils.flop_counter.FlopCounterMode``
(which counts two FLOPs per multiply-add, halved here), taken in the same forward pass that
records the layer table and activation memory. Memory here is in decimal MB (10^6 bytes).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

with warnings.catch_warnings():
    # fvcore scripts a helper at import time, which torch reports as deprecated.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

log = logging.getLogger(__name__)

MB = 1e6
CONVENTIONS = {
    "macs": "fvcore FlopCountAnalysis at batch 1, in multiply-accumulates (MACs): one multiply-add "
            "counts as one (fvcore calls it a flop; FLOPs = 2 x MACs); ops listed in skipped_ops are "
            "not counted",
    "mult_adds": "torch.utils.flop_counter.FlopCounterMode at batch 1 (convolutions, linear layers, "
                 "matrix products), its FLOPs divided by 2: one multiply-add per count",
    "activation_memory_mb": "sum of the distinct output tensors of every leaf module for one image "
                            "(in-place results and views counted once), in the parameters' dtype; "
                            "MB = 10^6 bytes",
    "memory_mb": "estimated memory of one forward pass at batch 1: input + activation_memory_mb + "
                 "parameters, MB = 10^6 bytes; training needs more (gradients, optimiser state)",
}


@dataclass(frozen=True)
class Layer:
    """One call of a leaf module in the forward pass."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class Complexity:
    """Cost figures of a network at one square input size (batch 1)."""

    image_size: int
    macs: int
    mult_adds: int
    params_total: int
    params_trainable: int
    input_bytes: int
    activation_bytes: int
    param_bytes: int
    dtype: str
    skipped_ops: dict[str, int] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)

    @property
    def memory_bytes(self) -> int:
        return self.input_bytes + self.activation_bytes + self.param_bytes

    def section(self) -> dict[str, Any]:
        """The ``complexity`` section of a run's result (scalars, conventions, skipped op names)."""
        return {
            "image_size": self.image_size,
            "macs": self.macs,
            "gmacs": self.macs / 1e9,
            "mult_adds": self.mult_adds,
            "gmult_adds": self.mult_adds / 1e9,
            "params_total": self.params_total,
            "params_trainable": self.params_trainable,
            "activation_memory_mb": self.activation_bytes / MB,
            "param_memory_mb": self.param_bytes / MB,
            "memory_mb": self.memory_bytes / MB,
            "dtype": self.dtype,
            "skipped_ops": sorted(self.skipped_ops),
            "conventions": dict(CONVENTIONS),
        }


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def fvcore_macs(model: nn.Module, inputs: torch.Tensor) -> FlopCountAnalysis:
    """fvcore's analysis (its ``total()`` counts multiply-adds) with its per-op and tracer warnings
    off (skipped ops are reported once)."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis


def _leaf_pass(model: nn.Module, inputs: torch.Tensor) -> tuple[list[tuple[str, nn.Module, tuple]], int, int]:
    """One forward pass on the meta device: leaf-module outputs and FlopCounterMode's total.

    Shapes and counts need no arithmetic, so parameters, buffers and input are swapped for
    meta tensors (no copy, no compute). Returns (name, module, output shape) per call, the
    bytes of distinct output tensors and the FLOPs of FlopCounterMode (two per multiply-add).
    """
    calls: list[tuple[str, nn.Module, tuple]] = []
    # In-place results are the same tensor object and views share a base: count each once.
    # Holding the tensors keeps their ids from being reused during the pass.
    seen: dict[int, torch.Tensor] = {}

    def record(name: str):
        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            outputs = output if isinstance(output, (list, tuple)) else [output]
            tensors = [item for item in outputs if isinstance(item, torch.Tensor)]
            for tensor in tensors:
                base = tensor if tensor._base is None else tensor._base
                seen.setdefault(id(base), base)
            calls.append((name, module, tuple(tensors[0].shape) if tensors else ()))
        return hook

    meta_state = {name: tensor.to("meta") for name, tensor in
                  [*model.named_parameters(), *model.named_buffers()]}
    meta_inputs = inputs.to("meta")
    seen[id(meta_inputs)] = meta_inputs
    handles = [module.register_forward_hook(record(name)) for name, module in model.named_modules()
               if next(module.children(), None) is None]
    try:
        with FlopCounterMode(display=False) as counter:
            functional_call(model, meta_state, (meta_inputs,))
    finally:
        for handle in handles:
            handle.remove()
    activation_bytes = sum(tensor.numel() * tensor.element_size() for key, tensor in seen.items()
                           if key != id(meta_inputs))
    return calls, activation_bytes, counter.get_total_flops()


def analyse(model: nn.Module, image_size: int, in_channels: int = 3,
            device: torch.device | str | None = None) -> Complexity:
    """Multiply-adds (two counts), parameters and memory of ``model`` for one ``image_size`` image.

    The model is measured in eval mode (restored afterwards) on its own device with random
    input in its parameters' dtype; the numbers depend only on shapes, not on weights.
    """
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = device or (parameter.device if parameter is not None else "cpu")
    # Lightning calls test hooks under inference_mode; tracing needs ordinary tensors.
    with torch.inference_mode(False), torch.no_grad(), _eval_mode(model):
        inputs = torch.randn(1, in_channels, image_size, image_size, dtype=dtype, device=device)
        analysis = fvcore_macs(model, inputs)
        macs = int(analysis.total())
        by_module = analysis.by_module()
        skipped = dict(analysis.unsupported_ops())
        calls, activation_bytes, counter_flops = _leaf_pass(model, inputs)

    layers, listed = [], set()
    for name, module, shape in calls:
        first = name not in listed
        listed.add(name)
        layers.append(Layer(name=name, kind=type(module).__name__, output_shape=shape,
                            params=sum(p.numel() for p in module.parameters()) if first else 0,
                            macs=int(by_module.get(name, 0)) if first else 0))
    parameters = list(model.parameters())
    # FlopCounterMode counts 2 FLOPs per multiply-add: halved, its count is in MACs.
    return Complexity(
        image_size=image_size, macs=macs, mult_adds=counter_flops // 2,
        params_total=sum(p.numel() for p in parameters),
        params_trainable=sum(p.numel() for p in parameters if p.requires_grad),
        input_bytes=inputs.numel() * inputs.element_size(), activation_bytes=activation_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in parameters),
        dtype=str(dtype).removeprefix("torch."), skipped_ops=skipped, layers=layers,
    )


def architecture_summary(model_name: str, num_classes: int, complexity: Complexity) -> str:
    """The text table of ``summary/{model}/{res}/architecture_summary.txt``."""
    size = complexity.image_size
    rows = [(f"{layer.name} ({layer.kind})", str(list(layer.output_shape)), f"{layer.params:,}",
             f"{layer.macs:,}") for layer in complexity.layers]
    other = complexity.macs - sum(layer.macs for layer in complexity.layers)
    if other:
        rows.append(("(ops outside leaf modules)", "", "", f"{other:,}"))
    header = ("Layer (type)", "Output shape", "Params", "MACs (fvcore)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))])

    rule = "-" * len(fmt(header))
    skipped = ", ".join(f"{op} x{count}" for op, count in sorted(complexity.skipped_ops.items()))
    text = [
        f"{model_name} at {size}x{size}, {num_classes} classes, batch 1, {complexity.dtype}",
        rule, fmt(header), rule, *map(fmt, rows), rule,
        f"Total params: {complexity.params_total:,}",
        f"Trainable params: {complexity.params_trainable:,}",
        f"Total MACs (G): {complexity.macs / 1e9:.4f}   [{CONVENTIONS['macs']}]",
        f"Total mult-adds (G): {complexity.mult_adds / 1e9:.4f}   [{CONVENTIONS['mult_adds']}]",
        f"Ops fvcore does not count: {skipped or 'none'}",
        rule,
        f"Estimated memory at batch 1 (MB = 10^6 bytes, {complexity.dtype}):",
        f"  Input size (MB): {complexity.input_bytes / MB:.2f}",
        f"  Forward activations (MB): {complexity.activation_bytes / MB:.2f}   "
        f"[{CONVENTIONS['activation_memory_mb']}]",
        f"  Params size (MB): {complexity.param_bytes / MB:.2f}",
        f"  Estimated total size (MB): {complexity.memory_bytes / MB:.2f}   [{CONVENTIONS['memory_mb']}]",
        rule,
    ]
    return "\n".join(text) + "\n"
