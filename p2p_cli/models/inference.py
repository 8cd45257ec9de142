"""A frozen model prepared for repeated inference: the distillation teacher's forward pass.

Distillation runs the frozen teacher on every training batch, so its forward pass costs as much
as a large part of the student's train step. Two things a frozen network in eval mode does not
need are removed from a private copy (the caller's model, whose weights hash is checked after
training, is left untouched):

* **BatchNorm folded into the convolution before it** (timm's BatchNorm + activation layers
  included: the activation stays): eval-mode BN is the affine map
  ``y = γ (x − μ) / √(σ² + ε) + β``, so ``BN(conv(x))`` is one convolution with weights
  ``W γ / √(σ² + ε)`` and bias ``β + (b − μ) γ / √(σ² + ε)`` — one pass over the activations
  fewer per BN layer (ResNet-50 has 53). Equal up to rounding.
* **weights stored in the autocast precision**: under bf16 autocast every convolution otherwise
  casts its fp32 weights to bf16 on every call (ResNet-50: 25 M parameters per forward pass).
  Done only when no BatchNorm is left (one that could not be folded keeps fp32 statistics).

The add-on and the prototype layer stay in fp32, as in :meth:`PrototypeNetwork.features`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from p2p_cli.models.protopnet import PrototypeNetwork


class _LeafTracer(torch.fx.Tracer):
    """Traces through every module except convolutions and BatchNorms (timm's ``Conv2dSame`` and
    ``BatchNormAct2d`` included), which stay single call sites whose data flow is visible."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.Conv2d | nn.modules.batchnorm._BatchNorm) or super().is_leaf_module(m, qualname)


def _after_batchnorm(bn: nn.Module) -> nn.Module:
    """What is left of a BatchNorm once folded: nothing, or timm's ``BatchNormAct2d`` dropout and
    activation (its forward is batch_norm → drop → act)."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (put in eval mode) with every BatchNorm2d that directly follows a
    Conv2d folded into it (torch's ``fuse_conv_bn_eval``); the BatchNorm becomes an identity (or,
    for timm's ``BatchNormAct2d``, its activation). The pairs come from a ``torch.fx`` trace of
    the data flow; a conv whose output has other users is left alone, and a module that cannot be
    traced is copied unchanged. Same outputs up to floating-point rounding.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    try:
        graph = _LeafTracer().trace(module)
    except Exception:  # noqa: BLE001 - fx raises many kinds of errors on untraceable code
        return module
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        bn = module.get_submodule(node.target)
        prev = node.args[0] if node.args else None
        if (not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or not isinstance(prev, torch.fx.Node)
                or prev.op != "call_module" or len(prev.users) != 1):
            continue
        conv = module.get_submodule(prev.target)
        if not isinstance(conv, nn.Conv2d):
            continue
        module.set_submodule(prev.target, fuse_conv_bn_eval(conv, bn))
        module.set_submodule(node.target, _after_batchnorm(bn))
    return module


def frozen_inference_copy(model: PrototypeNetwork, *, amp_dtype: torch.dtype | None = None,
                          channels_last: bool = False) -> PrototypeNetwork:
    """A frozen, eval-mode copy of ``model`` with its backbone's BatchNorms folded and, when
    ``amp_dtype`` is given and no BatchNorm remains, the backbone's weights in that dtype.

    Run it under the same autocast as ``model``: images (B, 3, S, S) give the same
    :class:`~p2p_cli.models.protopnet.ProtoOutput` up to rounding.
    """
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    backbone = fold_batchnorm(fast.backbone).requires_grad_(False)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    if amp_dtype is not None and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        backbone = backbone.to(amp_dtype)
    fast.backbone = backbone
    return fast
