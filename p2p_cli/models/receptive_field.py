"""Exact receptive fields of a ProtoPNet's feature-grid cells, in model-input pixels.

The receptive field of grid cell (h, w) is the set of input pixels that can influence the
add-on feature ω(x)[:, h, w] (the patch a 1×1 prototype is compared with). It is computed as
the support of the input gradient ∂ Σ_d ω(x)[d, h, w] / ∂x on a *structural surrogate* of the
network — a copy whose gradient is nonzero along every path the architecture allows:

* every weight tensor of rank ≥ 2 (convolutions, linear layers) is set to the positive constant
  1 / fan-in, every bias to 0, every rank-1 weight (norm scales) to 1, BatchNorm running
  statistics to mean 0 / variance 1, so with a positive input every activation is positive and
  ReLU-like gates pass everything;
* ``nn.MaxPool2d`` becomes ``nn.AvgPool2d`` with the same window (max pooling routes its
  gradient to one element of the window; average pooling to all of it — the same support);
* the add-on's final Sigmoid becomes the identity (it would saturate and underflow), and so do
  clipping activations (``nn.Hardtanh``, e.g. EfficientNet-Lite's ReLU6): residual sums of the
  constant weights grow past 6, where ReLU6's gradient is 0.

Zero padding never enters input space, so cells near the border get clipped boxes, exactly as
in the network. Convolution and pooling windows are rectangles, so the support of cell (h, w)
is a product ``X(w) × Y(h)`` of intervals: computing the cells (i, i) on the diagonal gives every
cell's box in ``max(H, W)`` gradient evaluations instead of ``H·W``. Results are cached per
architecture and input size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in input pixels, x1 and y1 exclusive."""

_CACHE: dict[tuple, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}


def structural_surrogate(module: nn.Module) -> nn.Module:
    """A float32 CPU-or-same-device copy of ``module`` whose input-gradient support equals its
    architectural receptive field (see the module docstring). ``module`` is not modified."""
    net = copy.deepcopy(getattr(module, "_orig_mod", module)).float().eval()
    net = net.to(memory_format=torch.contiguous_format)
    _replace(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif p.ndim >= 2:
                p.fill_(1.0 / max(1, p[0].numel()))
            else:
                p.fill_(1.0)
            p.requires_grad_(False)
        for name, b in net.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                b.zero_()
            elif leaf == "running_var":
                b.fill_(1.0)
    return net


def _replace(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.MaxPool2d and child.dilation in (1, (1, 1)):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                               ceil_mode=child.ceil_mode))
        elif isinstance(child, nn.Sigmoid | nn.Hardtanh):  # (ReLU6 is a Hardtanh)
            setattr(module, name, nn.Identity())
        else:
            _replace(child)


def _has_max_pool(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MaxPool2d | nn.AdaptiveMaxPool2d) for m in module.modules())


def _support(grad: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """(x-interval, y-interval) of the nonzero entries of one (C, S, S) gradient."""
    nz = grad.abs().sum(dim=0) > 0
    ys = torch.nonzero(nz.any(dim=1)).flatten()
    xs = torch.nonzero(nz.any(dim=0)).flatten()
    if len(xs) == 0:
        raise RuntimeError("receptive field: the input gradient is zero everywhere")
    return (int(xs.min()), int(xs.max()) + 1), (int(ys.min()), int(ys.max()) + 1)


def feature_intervals(net: nn.Module, image_size: int, *, key: tuple | None = None
                      ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Per grid column w the x-interval ``[x0, x1)`` and per grid row h the y-interval ``[y0, y1)``
    of the receptive field of the feature map ``net(x)`` (B, D, H, W) for inputs (B, 3, S, S).

    ``net`` is made into its :func:`structural_surrogate` first. ``key`` (hashable) enables
    the process-wide cache.
    """
    if key is not None and key in _CACHE:
        return _CACHE[key]
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    surrogate = structural_surrogate(net)
    draws = 3 if _has_max_pool(surrogate) else 1  # leftover max pools: union over random inputs
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        probe = surrogate(torch.ones(1, 3, image_size, image_size, device=device))
    gh, gw = probe.shape[-2:]
    n = max(gh, gw)
    xs: list[tuple[int, int]] = [(image_size, 0)] * gw
    ys: list[tuple[int, int]] = [(image_size, 0)] * gh
    for _ in range(draws):
        x = (torch.rand(n, 3, image_size, image_size, generator=gen) + 0.5).to(device).requires_grad_(True)
        out = surrogate(x)
        cells = [(min(i, gh - 1), min(i, gw - 1)) for i in range(n)]
        picked = torch.stack([out[i, :, h, w].sum() for i, (h, w) in enumerate(cells)])
        (grad,) = torch.autograd.grad(picked.sum(), x)
        for i, (h, w) in enumerate(cells):
            (x0, x1), (y0, y1) = _support(grad[i])
            xs[w] = (min(xs[w][0], x0), max(xs[w][1], x1))
            ys[h] = (min(ys[h][0], y0), max(ys[h][1], y1))
    result = (xs, ys)
    if key is not None:
        _CACHE[key] = result
    return result


def model_key(model: nn.Module, image_size: int) -> tuple:
    """Cache key: the architecture (ProtoPNetConfig when present) and the input size."""
    config = getattr(model, "config", None)
    arch = tuple(sorted(config.to_dict().items())) if hasattr(config, "to_dict") else id(model)
    return (arch, int(image_size))


def receptive_field_boxes(model: nn.Module, image_size: int) -> list[list[Box]]:
    """``boxes[h][w]`` = the receptive field of grid cell (h, w) of a ProtoPNet's add-on
    features, as ``(x0, y0, x1, y1)`` in input pixels of an ``image_size`` square input."""
    backbone = model.backbone  # type: ignore[attr-defined]
    net = nn.Sequential(getattr(backbone, "_orig_mod", backbone), model.add_on)  # type: ignore[attr-defined]
    xs, ys = feature_intervals(net, image_size, key=model_key(model, image_size))
    return [[(x0, y0, x1, y1) for (x0, x1) in xs] for (y0, y1) in ys]
