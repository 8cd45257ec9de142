"""Train/eval transforms on uint8 ``(3, S, S)`` tensors (``torchvision.transforms.v2``).

The ProtoPNet references augment *offline*: 40 copies per image made by four Augmentor
pipelines, each applying one geometric operation — rotation (±15°), skew (0.2), shear (±10°)
or random (elastic) distortion — followed by a horizontal flip with probability 0.5. The
training transform does the same *online*: per image it picks one of those operations
(``mode="choice"``, the reference behaviour) or applies all of them in sequence
(``mode="all"``, stronger), then flips, converts to float and normalises with ImageNet
statistics. The dataset already resized images to ``S × S``, so evaluation only normalises.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

AugmentMode = Literal["choice", "all"]


def _normalize() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


class GridDistortion(torch.nn.Module):
    """Smooth random (elastic) distortion, like Augmentor's ``random_distortion``.

    Random displacements of at most ``magnitude`` (fraction of the image side) on a
    ``grid × grid`` lattice are upsampled bicubically to a dense flow field and applied with
    bilinear sampling (edges replicate). Costs a fraction of a millisecond at 112 px, ~10×
    less than ``v2.ElasticTransform``'s large Gaussian blur. Input and output: uint8 or float
    ``(C, H, W)`` / ``(B, C, H, W)``; uses the global torch RNG.
    """

    def __init__(self, grid: int = 5, magnitude: float = 0.03) -> None:
        super().__init__()
        self.grid = grid
        self.magnitude = magnitude

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batched = image.ndim == 4
        x = image if batched else image.unsqueeze(0)
        b, _, h, w = x.shape
        coarse = (torch.rand(b, 2, self.grid, self.grid) * 2 - 1) * (2 * self.magnitude)
        flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w)
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        grid = base.unsqueeze(0) + flow.permute(0, 2, 3, 1)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        if image.dtype == torch.uint8:
            out = out.round_().clamp_(0, 255).to(torch.uint8)
        return out if batched else out.squeeze(0)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, magnitude={self.magnitude}"


JPEG_QUALITY = 20
"""JPEG quality of the robustness experiment and of the ``augment_jpeg`` remedy (Hoffmann et al. 2021, §4, App. F.2)."""


def jpeg_compress(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Encode and decode uint8 images ``(3, H, W)`` or ``(B, 3, H, W)`` as JPEG at ``quality`` (1-100).

    Returns uint8 of the same shape on the same device: the images with the codec's artefacts
    (Pillow's libjpeg, default 4:2:0 chroma subsampling; deterministic — the same input always
    gives the same output).
    """
    import io

    from PIL import Image

    if images.dtype != torch.uint8:
        raise ValueError(f"jpeg_compress expects uint8 images, got {images.dtype}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in [1, 100], got {quality}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"jpeg_compress expects (3, H, W) or (B, 3, H, W) images, got {tuple(images.shape)}")
    batch = images.detach().cpu().reshape(-1, *images.shape[-3:]).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(batch)
    for i, pixels in enumerate(batch):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).reshape(images.shape).contiguous().to(images.device)


class RandomJPEG(torch.nn.Module):
    """With probability ``p``, JPEG-compress a uint8 ``(3, H, W)`` image at ``quality`` (else pass it through).

    The remedy of Hoffmann et al. (2021, App. F.2): every training image has a 50 % chance of
    being compressed at quality 20. Must run before the float conversion; draws from the global
    torch RNG (seeded per training step, so resumed runs draw the same).
    """

    def __init__(self, p: float, quality: int = JPEG_QUALITY) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"JPEG probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.quality = int(quality)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.p <= 0.0 or float(torch.rand(())) >= self.p:
            return image
        return jpeg_compress(image, self.quality)

    def extra_repr(self) -> str:
        return f"p={self.p}, quality={self.quality}"


def geometric_ops(image_size: int, elastic: float = 0.25) -> tuple[list[v2.Transform], list[float]]:
    """The reference's geometric operations and their selection weights.

    Rotation ±15°, perspective skew 0.2, shear ±10° along x *or* y, and (if ``elastic > 0``)
    a smooth grid (elastic) distortion chosen with probability ``elastic``; the other three share the rest.
    """
    bilinear = InterpolationMode.BILINEAR
    ops: list[v2.Transform] = [
        v2.RandomRotation(15, interpolation=bilinear),
        v2.RandomPerspective(distortion_scale=0.2, p=1.0, interpolation=bilinear),
        v2.RandomChoice([
            v2.RandomAffine(degrees=0, shear=(-10, 10, 0, 0), interpolation=bilinear),
            v2.RandomAffine(degrees=0, shear=(0, 0, -10, 10), interpolation=bilinear),
        ]),
    ]
    if not 0.0 <= elastic <= 1.0:
        raise ValueError(f"elastic probability must be in [0, 1], got {elastic}")
    if elastic == 0.0:
        return ops, [1.0 / 3] * 3
    ops.append(GridDistortion())
    return ops, [(1.0 - elastic) / 3] * 3 + [elastic]


def train_transform(image_size: int, augment: bool = True, *, elastic: float = 0.25,
                    mode: AugmentMode = "choice", jpeg: float = 0.0) -> v2.Compose:
    """uint8 ``(3, S, S)`` → augmented float ``(3, S, S)``, ImageNet-normalised.

    ``augment=False`` gives :func:`eval_transform` (plus the JPEG step when ``jpeg > 0``).
    ``mode="choice"`` applies one geometric operation per image (ProtoPNet's pipelines);
    ``mode="all"`` applies rotation, skew, shear and (with probability ``elastic``) the elastic
    distortion in sequence. Both then flip horizontally with probability 0.5. ``jpeg`` > 0
    JPEG-compresses the uint8 image with that probability (:class:`RandomJPEG`, quality 20)
    as the last step before normalisation.
    """
    compress: list[torch.nn.Module] = [RandomJPEG(jpeg)] if jpeg > 0 else []
    if not augment:
        return v2.Compose([*compress, *_normalize()]) if compress else eval_transform(image_size)
    ops, weights = geometric_ops(image_size, elastic)
    if mode == "choice":
        geometric: list[v2.Transform] = [v2.RandomChoice(ops, p=weights)]
    elif mode == "all":
        geometric = ops[:3] + ([v2.RandomApply([ops[3]], p=elastic)] if len(ops) > 3 else [])
    else:
        raise ValueError(f"unknown augmentation mode {mode!r} (choose 'choice' or 'all')")
    return v2.Compose([*geometric, v2.RandomHorizontalFlip(0.5), *compress, *_normalize()])


def eval_transform(image_size: int | None = None) -> v2.Compose:
    """uint8 ``(3, S, S)`` → float ``(3, S, S)`` normalised with ImageNet mean/std (no resizing)."""
    return v2.Compose(_normalize())


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` → float32 normalised, the same as :func:`eval_transform`."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Normalised float ``(3, H, W)`` or ``(B, 3, H, W)`` → uint8 ``(H, W, 3)`` / ``(B, H, W, 3)``."""
    t = tensor.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((t * std + mean).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()
