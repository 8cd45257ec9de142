"""The explanation region S of the head-on-stomach attack and its success criterion
(Hoffmann et al. 2021, "This Looks Like That... Does it?", Eq. 2 and App. F.1).

A prototype's similarity map g (H, W) over the feature grid A is explained by its best match; S
is the set of grid cells covered by the high-activation box of that match on the clean image
(ProtoPNet's 95th-percentile box, Chen et al. 2019), S_noisy = A ∖ S. Cell (h, w) covers the
input pixels ``[round(h·S/H), round((h+1)·S/H))`` × ``[round(w·S/W), round((w+1)·S/W))``.
"""

from __future__ import annotations

import math

import torch

from p2p_cli.models.maps import high_activation_box


def cell_edges(size: int, cells: int) -> torch.Tensor:
    """Pixel edges of ``cells`` grid cells over ``size`` pixels: cell i covers [e_i, e_{i+1}).

    Same rounding as the provenance ``patch_box`` (``round(i·S/H)``). Returns long (cells + 1,)."""
    return torch.tensor([round(i * size / cells) for i in range(cells + 1)], dtype=torch.long)


def pixel_cells(size: int, cells: int) -> torch.Tensor:
    """For every pixel row (or column) 0..size-1, the index of the grid cell it lies in: long (size,)."""
    edges = cell_edges(size, cells)
    return (torch.bucketize(torch.arange(size), edges[1:], right=True)).clamp(max=cells - 1)


def best_match_region(distance_maps: torch.Tensor, image_size: int, percentile: float = 95.0) -> torch.Tensor:
    """S of Eq. 2 for each of B (prototype, image) pairs: the cells of the high-activation box.

    distance_maps: (B, H, W) squared distances of one prototype per image. The similarity map is
    upsampled bicubically to ``image_size``; its ``percentile`` box (ProtoPNet's visualisation)
    is intersected with the cell footprints. The arg-max cell is always included.
    Returns bool (B, H, W).
    """
    b, h, w = distance_maps.shape
    ys, xs = cell_edges(image_size, h), cell_edges(image_size, w)
    region = torch.zeros(b, h, w, dtype=torch.bool)
    maps = distance_maps.detach().float().cpu()
    for i in range(b):
        x0, y0, x1, y1 = high_activation_box(maps[i], image_size, percentile)
        rows = (ys[:-1] < y1) & (ys[1:] > y0)
        cols = (xs[:-1] < x1) & (xs[1:] > x0)
        region[i] = rows[:, None] & cols[None, :]
        best = int(maps[i].flatten().argmin())
        region[i, best // w, best % w] = True
    return region.to(distance_maps.device)


def region_pixel_mask(cells: torch.Tensor, image_size: int) -> torch.Tensor:
    """bool cells (B, H, W) → float pixel mask (B, 1, S, S): 1 on the footprints of the cells."""
    _, h, w = cells.shape
    rows = pixel_cells(image_size, h).to(cells.device)
    cols = pixel_cells(image_size, w).to(cells.device)
    return cells[:, rows][:, :, cols].unsqueeze(1).float()


def region_box(cells: torch.Tensor, image_size: int) -> list[int]:
    """Pixel footprint ``[x0, y0, x1, y1]`` of the bounding rectangle of bool cells (H, W) (non-empty)."""
    h, w = cells.shape
    ys, xs = cell_edges(image_size, h).tolist(), cell_edges(image_size, w).tolist()
    rows = torch.nonzero(cells.any(1)).flatten().tolist()
    cols = torch.nonzero(cells.any(0)).flatten().tolist()
    return [xs[cols[0]], ys[rows[0]], xs[cols[-1] + 1], ys[rows[-1] + 1]]


def best_cell_box(distance_map: torch.Tensor, image_size: int) -> list[int]:
    """Pixel footprint ``[x0, y0, x1, y1]`` of the best-matching (arg-min distance) cell of a map (H, W)."""
    cells = torch.zeros(distance_map.shape, dtype=torch.bool)
    cells.view(-1)[int(distance_map.flatten().argmin())] = True
    return region_box(cells, image_size)


def region_maxima(sim_maps: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max over S, max over A ∖ S) of similarity maps (B, H, W) with S = ``region`` (B, H, W) bool.

    An empty side gives −inf. Returns two (B,) tensors."""
    neg = torch.finfo(sim_maps.dtype).min
    inside = sim_maps.masked_fill(~region, neg).flatten(1).amax(1)
    outside = sim_maps.masked_fill(region, neg).flatten(1).amax(1)
    inside = torch.where(region.flatten(1).any(1), inside, torch.full_like(inside, -math.inf))
    outside = torch.where((~region).flatten(1).any(1), outside, torch.full_like(outside, -math.inf))
    return inside, outside


def explanation_moved(sim_maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The success criterion (App. F.1): the prototype's best match left S.

    sim_maps: (B, H, W) similarities of one prototype on the (perturbed) images; region: (B, H, W)
    bool, S from the clean image. True where ``max_{A∖S} g > max_S g`` (strictly). Returns bool (B,)."""
    inside, outside = region_maxima(sim_maps, region)
    return outside > inside


def stomach_objective(sim_maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Eq. 2 per image: ``mean_{S_noisy} g − mean_S g`` with S_noisy = A ∖ S. (B, H, W) → (B,)."""
    r = region.float()
    n_in = r.flatten(1).sum(1).clamp(min=1)
    n_out = (1 - r).flatten(1).sum(1).clamp(min=1)
    return (sim_maps * (1 - r)).flatten(1).sum(1) / n_out - (sim_maps * r).flatten(1).sum(1) / n_in
