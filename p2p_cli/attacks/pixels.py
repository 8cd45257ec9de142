"""Pixel space: attacks work on [0, 1] float images; the models' ImageNet normalisation happens
inside the forward pass, so budgets such as ε = 8/255 are in pixel units."""

from __future__ import annotations

import math

import torch

from p2p_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from p2p_cli.errors import P2PError
from p2p_cli.io.config import parse_number
from p2p_cli.models.protopnet import ProtoOutput, ProtoPNet
from p2p_cli.runtime.device import Runtime


def _channel_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images (B, 3, S, S) → ImageNet-normalised model input (differentiable)."""
    mean, std = _channel_stats(pixels.device)
    return (pixels - mean) / std


def forward_pixels(model: ProtoPNet, pixels: torch.Tensor, rt: Runtime) -> ProtoOutput:
    """The model's forward pass on [0, 1] images (B, 3, S, S); gradients flow to ``pixels``."""
    x = normalize_pixels(pixels)
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        return model(x)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) → float32 [0, 1]."""
    return images.float() / 255.0


def parse_budget(value: str | float, name: str) -> float:
    """``"8/255"``, ``"0.03"`` or a float → a pixel budget in [0, 1]; a one-line P2PError otherwise."""
    try:
        out = parse_number(value) if isinstance(value, str) else float(value)
    except ValueError:
        raise P2PError(f"--{name} expects a number or a fraction such as 8/255, got '{value}'") from None
    if not 0.0 <= out <= 1.0 or math.isnan(out):
        raise P2PError(f"--{name} is in [0, 1] pixel units (e.g. 8/255), got {value}")
    return out
