"""A frozen model prepared for repeated inference: the distillation teacher's forward pass.

Distillation runs the frozen teacher on every training batch, so its forward pass costs as much
as a large part of the student's train step. Two things a frozen network in eval mode does not
need are removed from a private copy (the caller's model, whose weights hash is checked after
training, is left untouched):

* **BatchNorm folded into the convolution before it**: eval-mode BN is the affine map
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


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` (eval mode) with every Conv2d → BatchNorm2d pair folded into one Conv2d.

    Uses ``torch.fx`` (symbolic tracing); a module that cannot be traced is returned unchanged.
    The result maps the same inputs to the same outputs up to floating-point rounding.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module.eval(), inplace=False)
    except Exception:  # noqa: BLE001 - fx raises many kinds of errors on untraceable code
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
