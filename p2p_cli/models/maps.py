"""Where a prototype activates on an image: a (H, W) distance map upsampled to the input, its
high-activation box (ProtoPNet's 95th-percentile box), and a grid cell's box in input pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p2p_cli.models.protopnet import log_similarity


def upsampled_similarity(distance_map: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """ProtoPNet's activation map: the similarity ``log((d + 1)/(d + ε))`` of a (H, W) distance map,
    upsampled bicubically to ``size`` (S, or (height, width)); returns float32 (height, width)."""
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    sim = log_similarity(distance_map.float())[None, None]
    return F.interpolate(sim, size=hw, mode="bicubic", align_corners=False)[0, 0]


def percentile_box(upsampled: torch.Tensor, percentile: float = 95.0) -> list[int]:
    """Bounding box [x0, y0, x1, y1] (x1, y1 exclusive) of the pixels of a (height, width) map at or
    above its ``percentile``-th percentile."""
    threshold = torch.quantile(upsampled.flatten().float(), percentile / 100.0)
    ys, xs = torch.nonzero(upsampled >= threshold, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def high_activation_box(distance_map: torch.Tensor, image_size: int | tuple[int, int],
                        percentile: float = 95.0) -> list[int]:
    """ProtoPNet's box: upsample the similarity map (H, W) bicubically to the image size (S, or
    (height, width)) and take the bounding box of the pixels at or above the ``percentile``-th
    percentile. Returns [x0, y0, x1, y1] in input pixels (x1, y1 exclusive)."""
    return percentile_box(upsampled_similarity(distance_map, image_size), percentile)


def patch_box(location: tuple[int, int], grid: tuple[int, int], image_size: int) -> list[int]:
    """The grid cell of ``location`` scaled to input pixels, [x0, y0, x1, y1]."""
    (h, w), (gh, gw) = location, grid
    return [round(w * image_size / gw), round(h * image_size / gh),
            round((w + 1) * image_size / gw), round((h + 1) * image_size / gh)]
