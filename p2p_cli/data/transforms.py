"""Training augmentation on uint8 batches and evaluation normalisation.

The ProtoPNet references augment *offline* (40 Augmentor copies per image: rotation, skew,
shear or elastic distortion, then a flip). :class:`BatchAugment` does the same *online* on a
whole batch at once — one projective map (plus an optional flow field) per image, one
``grid_sample`` per batch — then flips, optionally JPEG-compresses, and normalises with
ImageNet statistics. The dataset already resized images to ``S × S``, so evaluation only
normalises (:func:`eval_transform` per image, :func:`normalize` per batch).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

AugmentMode = Literal["choice", "all"]


def _normalize() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


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


# ----------------------------------------------------------------------------- batched augmentation
# Every geometric operation is a projective map of the image plane. Maps are written in
# normalised coordinates (``grid_sample``'s, align_corners=False: the image spans [-1, 1]) and go
# from *output* to *input* positions: the sampling grid of the warped image is ``M @ p_out``.


def rotation_maps(degrees: torch.Tensor) -> torch.Tensor:
    """(B,) angles in degrees → (B, 3, 3) maps rotating square images about their centre."""
    a = torch.deg2rad(degrees.double())
    c, s = torch.cos(a), torch.sin(a)
    m = _eye(len(a))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def shear_maps(degrees: torch.Tensor, along_y: torch.Tensor) -> torch.Tensor:
    """(B,) shear angles and (B,) bools → (B, 3, 3) maps shearing along x (``x_in = x + tan(a)·y``) or y."""
    t = torch.tan(torch.deg2rad(degrees.double()))
    m = _eye(len(t))
    m[:, 0, 1] = torch.where(along_y, torch.zeros_like(t), t)
    m[:, 1, 0] = torch.where(along_y, t, torch.zeros_like(t))
    return m


def perspective_maps(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The projective maps taking ``dst`` corners to ``src`` corners: (B, 4, 2) each → (B, 3, 3).

    Solves the 8 × 8 direct linear transform (``h33 = 1``) per image. With ``src`` the image
    corners and ``dst`` the corners moved inwards, warping with the map shows the whole image
    inside the quadrilateral ``dst`` (Augmentor's skew, torchvision's RandomPerspective).
    """
    b = src.shape[0]
    src, dst = src.double(), dst.double()
    a = torch.zeros(b, 8, 8, dtype=torch.float64)
    rhs = torch.zeros(b, 8, dtype=torch.float64)
    for k in range(4):
        (x, y), (u, v) = dst[:, k].unbind(-1), src[:, k].unbind(-1)
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        a[:, 2 * k] = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
        a[:, 2 * k + 1] = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
        rhs[:, 2 * k], rhs[:, 2 * k + 1] = u, v
    h = torch.linalg.solve(a, rhs)
    return torch.cat([h, torch.ones(b, 1, dtype=torch.float64)], 1).view(b, 3, 3)


def _eye(b: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)


def _pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h, w, 2) normalised (x, y) of the pixel centres (align_corners=False)."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


def warp(images: torch.Tensor, maps: torch.Tensor, flow: torch.Tensor | None = None,
         border: torch.Tensor | None = None) -> torch.Tensor:
    """Resample float ``(B, C, H, W)`` images through projective ``maps`` (B, 3, 3), bilinear.

    ``flow`` (B, H, W, 2), in normalised units, displaces the output positions before the map
    (an elastic distortion applied after the projective one). Positions outside the image read
    zeros, or, for images where ``border`` (B,) is true, the nearest edge pixel.
    """
    b, _, h, w = images.shape
    pts = _pixel_grid(h, w, images.device).expand(b, h, w, 2)
    if flow is not None:
        pts = pts + flow
    m = maps.to(device=images.device, dtype=torch.float32).view(b, 1, 1, 3, 3)
    x, y = pts[..., 0], pts[..., 1]
    z = m[..., 2, 0] * x + m[..., 2, 1] * y + m[..., 2, 2]
    grid = torch.stack([(m[..., 0, 0] * x + m[..., 0, 1] * y + m[..., 0, 2]) / z,
                        (m[..., 1, 0] * x + m[..., 1, 1] * y + m[..., 1, 2]) / z], dim=-1)
    if border is not None and bool(border.any()):
        idx = border.nonzero().squeeze(1).to(images.device)
        hi = torch.tensor([1 - 1 / w, 1 - 1 / h], device=images.device)
        grid = grid.index_copy(0, idx, torch.maximum(torch.minimum(grid[idx], hi), -hi))
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchAugment(torch.nn.Module):
    """ProtoPNet's training augmentation, applied to a whole batch at once on its device.

    The references augment *offline*: 40 copies per image made by four Augmentor pipelines,
    each applying one geometric operation — rotation (±15°), perspective skew (0.2), shear
    (±10° along x or y) or random elastic distortion — and then a horizontal flip with
    probability 0.5. Here, per image, ``mode="choice"`` picks one of those operations (the
    reference behaviour; elastic with probability ``elastic``, the others share the rest) and
    ``mode="all"`` applies rotation, skew and shear in sequence plus, with probability
    ``elastic``, the distortion. The chosen operations of all images become one projective map
    each plus an optional smooth flow field (random displacements of at most ``magnitude`` of
    the side on a ``grid × grid`` lattice, upsampled bicubically), and the batch is resampled
    by a single bilinear ``grid_sample`` — far cheaper on a CPU than per-image torchvision
    transforms. Then the flip, the optional JPEG step (probability ``jpeg``, quality 20: the
    robustness remedy of Hoffmann et al. 2021, App. F.2) and ImageNet normalisation.

    ``forward(images, generator)``: uint8 ``(B, 3, S, S)`` → float32 normalised, same device.
    Every random draw comes from ``generator`` (on the CPU), so the result depends only on its
    seed — not on the device, on DataLoader workers, or on where a resumed run restarted.
    """

    def __init__(self, augment: bool = True, *, mode: AugmentMode = "choice", elastic: float = 0.25,
                 jpeg: float = 0.0, rotation: float = 15.0, skew: float = 0.2, shear: float = 10.0,
                 flip: float = 0.5, grid: int = 5, magnitude: float = 0.03) -> None:
        super().__init__()
        if mode not in ("choice", "all"):
            raise ValueError(f"unknown augmentation mode {mode!r} (choose 'choice' or 'all')")
        for name, p in (("elastic", elastic), ("jpeg", jpeg), ("flip", flip)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability must be in [0, 1], got {p}")
        self.augment, self.mode, self.elastic, self.jpeg = augment, mode, float(elastic), float(jpeg)
        self.rotation, self.skew, self.shear, self.flip = float(rotation), float(skew), float(shear), float(flip)
        self.grid, self.magnitude = int(grid), float(magnitude)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"BatchAugment expects uint8 (B, 3, H, W) images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        x = images.float()
        if self.augment and len(x):
            x = self._geometric(x, generator)
        if self.jpeg > 0 and len(x):
            chosen = torch.rand(len(x), generator=generator) < self.jpeg
            if bool(chosen.any()):
                pixels = x.round().clamp_(0, 255).to(torch.uint8)
                idx = chosen.nonzero().squeeze(1).to(x.device)
                pixels[idx] = jpeg_compress(pixels[idx])
                x = pixels.float()
        return normalize(x)

    def _geometric(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape

        def u(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen, dtype=torch.float64)

        rot = rotation_maps((u(b) * 2 - 1) * self.rotation)
        # skew: every corner moves inwards by up to `skew` of the half-side, per axis
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
        skew = perspective_maps(corners.expand(b, 4, 2), corners - corners * u(b, 4, 2) * self.skew)
        shear = shear_maps((u(b) * 2 - 1) * self.shear, u(b) < 0.5)
        if self.mode == "all":
            maps = rot @ skew @ shear  # rotate, then skew, then shear (output→input maps compose this way)
            distort = u(b) < self.elastic
            border = torch.zeros(b, dtype=torch.bool)
        else:
            weights = torch.tensor([(1 - self.elastic) / 3] * 3 + [self.elastic], dtype=torch.float64)
            op = torch.multinomial(weights.expand(b, 4), 1, generator=gen).squeeze(1)
            maps = torch.stack([rot, skew, shear, _eye(b)], 1)[torch.arange(b), op]
            distort = border = op == 3  # the distortion alone replicates the edges, like Augmentor
        coarse = (u(b, 2, self.grid, self.grid) * 2 - 1) * (2 * self.magnitude)
        # the flip comes last: it mirrors the output positions (x → -x) before the map; a mirrored
        # random flow field is just another random flow field, so the flow needs no change
        sign = 1 - 2 * (u(b) < self.flip).double()
        maps = maps @ torch.diag_embed(torch.stack([sign, torch.ones_like(sign), torch.ones_like(sign)], 1))
        flow = None
        if bool(distort.any()):  # upsample the coarse displacements of the distorted images only
            idx = distort.nonzero().squeeze(1)
            fine = F.interpolate(coarse[idx].float().to(x.device), size=(h, w), mode="bicubic", align_corners=True)
            flow = torch.zeros(b, h, w, 2, device=x.device).index_copy_(0, idx.to(x.device), fine.permute(0, 2, 3, 1))
        return warp(x, maps, flow, border)

    def extra_repr(self) -> str:
        return (f"augment={self.augment}, mode={self.mode!r}, elastic={self.elastic}, jpeg={self.jpeg}, "
                f"rotation={self.rotation}, skew={self.skew}, shear={self.shear}, flip={self.flip}")


def eval_transform(image_size: int | None = None) -> v2.Compose:
    """uint8 ``(3, S, S)`` → float ``(3, S, S)`` normalised with ImageNet mean/std (no resizing)."""
    return v2.Compose(_normalize())


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` → float32 normalised, the same as :func:`eval_transform`."""
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    scale = 1.0 / (255.0 * std)
    shift = -torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1) / std
    return torch.addcmul(shift, images, scale)  # (x / 255 - mean) / std in one pass (uint8 promotes to float)


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Normalised float ``(3, H, W)`` or ``(B, 3, H, W)`` → uint8 ``(H, W, 3)`` / ``(B, H, W, 3)``."""
    t = tensor.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((t * std + mean).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()
