"""The image side of an explanation: reading any image file, the model's input and the display
image cut from the same region, and what the dataset knows about an image (its sample, split,
bounding-box crop and ground-truth part boxes).

Regions are ``(x0, y0, x1, y1)`` in original pixels; model inputs are uint8 ``(3, S, S)``
tensors resized exactly as the datasets resize them; display images are uint8 ``(h, w, 3)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from p2p_cli.data.images import crop_box, file_sha256
from p2p_cli.data.index import DatasetIndex, Sample
from p2p_cli.errors import P2PError

Region = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in the original image's pixels."""

_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_image(path: str | Path) -> Image.Image:
    """Any image file PIL reads → RGB, upright. EXIF orientation is applied; transparency is
    composited on white; 16-bit and float grayscale are scaled to 8 bits. Anything unreadable
    is a one-line :class:`P2PError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise P2PError(f"{path}: image not found")
    if not path.is_file():
        raise P2PError(f"{path}: not a file (expected a JPEG/PNG image)")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if arr.max(initial=0) > 255 else 255.0
                im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, rgba)
            return im.convert("RGB")
    except _READ_ERRORS as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise P2PError(f"{path}: cannot read image ({reason}); expected a JPEG/PNG image") from None


def model_input(image: Image.Image, image_size: int, region: Region | None = None) -> torch.Tensor:
    """The model input for ``image``: ``region`` (default the whole image) resized bilinearly to
    S × S exactly as the datasets do — uint8 (3, S, S)."""
    box = region or (0.0, 0.0, float(image.width), float(image.height))
    resized = image.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def display_image(image: Image.Image, long_side: int, region: Region | None = None) -> np.ndarray:
    """``region`` of ``image`` at its own aspect ratio, longer side ``long_side``: uint8 (h, w, 3)."""
    box = region or (0.0, 0.0, float(image.width), float(image.height))
    w, h = box[2] - box[0], box[3] - box[1]
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC, box=box), dtype=np.uint8)


def sample_region(sample: Sample | None, image: Image.Image, crop_bbox: bool) -> Region:
    """The region of ``image`` a model trained with ``crop_bbox`` sees (bbox crop for dataset images)."""
    if sample is None:
        return (0.0, 0.0, float(image.width), float(image.height))
    return crop_box(sample, image.size, crop_bbox)


def find_sample(index: DatasetIndex, path: Path) -> tuple[Sample, str] | None:
    """The dataset sample whose file is ``path`` (same resolved path, else same size and sha256),
    with its split name, or None."""
    target = path.resolve()
    splits = (("train", index.train), ("test", index.test))
    for split, samples in splits:
        for s in samples:
            if Path(s.path).resolve() == target:
                return s, split
    size = target.stat().st_size
    digest = None
    for split, samples in splits:
        for s in samples:
            try:
                if Path(s.path).stat().st_size != size:
                    continue
            except OSError:
                continue
            digest = digest or file_sha256(target)
            if file_sha256(s.path) == digest:
                return s, split
    return None


def part_boxes(index: DatasetIndex, sample: Sample, region: Region) -> list[tuple[str, list[float]]]:
    """Ground-truth part boxes of ``sample`` in original pixels relative to ``region``'s origin:
    ``[(part name, [x0, y0, x1, y1]), ...]`` for the visible parts.

    The synthetic set's boxes are exact: the drawn token, centre ± its radius (``synthetic.json``).
    Other datasets annotate points only: a box of half-side 36/224 of the region's shorter side
    around each point (the part-consistency metric's box, :mod:`p2p_cli.metrics.parts`).
    """
    if not sample.parts:
        return []
    names = index.part_names or [f"part {i + 1}" for i in range(len(sample.parts))]
    half = None
    meta_path = Path(index.root) / "synthetic.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            size = float(meta["params"]["image_size"])
            radius = max(2, round(float(meta["preset_config"]["part_radius"]) * size))
            half = (float(radius), float(radius + 1))  # token covers [c - r, c + r] inclusive
        except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError):
            half = None
    x0, y0, x1, y1 = region
    boxes = []
    for name, (px, py, visible) in zip(names, sample.parts, strict=False):
        if not visible:
            continue
        if half is not None:
            cx, cy = px - 0.5, py - 0.5  # annotated centre of the pixel the token is centred on
            box = [cx - half[0], cy - half[0], cx + half[1], cy + half[1]]
        else:
            r = 36 / 224 * min(x1 - x0, y1 - y0)
            box = [px - r, py - r, px + r, py + r]
        boxes.append((name, [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]))
    return boxes
