"""The module that is exported: images in, (logits, min distances) out."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from p2p_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from p2p_cli.models.protopnet import PrototypeNetwork

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "min_distances")


class ExportModule(nn.Module):
    """``forward(images (B, 3, S, S) float32, normalised) -> (logits (B, K), min_distances (B, m))``.

    A thin view of a trained :class:`~p2p_cli.models.protopnet.PrototypeNetwork` (ProtoPNet or
    ProtoTree) in eval mode; the distance maps and features of the full forward pass are dropped.
    """

    def __init__(self, model: PrototypeNetwork) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out.logits, out.min_distances


def export_module(model: PrototypeNetwork) -> ExportModule:
    """An :class:`ExportModule` of a float32 CPU copy-free view of ``model`` (moved to the CPU, fp32,
    eval mode, no gradients)."""
    model = model.to("cpu").float().eval()
    model.requires_grad_(False)
    return ExportModule(model).eval()


def sample_inputs(image_size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """``n`` seeded images of uniform noise in [0, 1], normalised like real inputs: (n, 3, S, S)."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, image_size, image_size, generator=gen)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def export_metadata(meta: dict[str, Any], image_size: int, *, name: str) -> dict[str, str]:
    """String metadata stored in the export: what a user needs to preprocess inputs and read outputs
    (``class_names`` as a JSON list, ``image_size``, ``mean``/``std`` as JSON lists, the input and
    output names, the architecture and the run's name)."""
    return {
        "producer": "p2p",
        "p2p_version": str(meta.get("p2p_version", "")),
        "run": name,
        "arch": str(meta.get("arch", "protopnet")),
        "class_names": json.dumps([str(c) for c in meta.get("class_names") or []]),
        "num_prototypes": str(meta.get("num_prototypes", "")),
        "image_size": str(int(image_size)),
        "mean": json.dumps(list(IMAGENET_MEAN)),
        "std": json.dumps(list(IMAGENET_STD)),
        "input": INPUT_NAME,
        "outputs": json.dumps(list(OUTPUT_NAMES)),
    }
