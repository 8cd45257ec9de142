"""Prototype projection ("push", ProtoPNet's stage 2, Chen et al. 2019, §2.2) — the one
implementation train, distill, prune and ``p2p push-prototypes`` all call.

For each prototype j: over the un-augmented training images of j's class(es), find the add-on
patch z with the smallest squared-L2 distance and set p_j ← z. One pass over the data,
vectorised over prototypes: per batch, one distance computation (B, m, H, W), a class mask,
one min-reduction per prototype. Under torch.distributed each rank pushes its shard and the
ranks agree on the global best by an all-gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from p2p_cli.runtime.device import Runtime


@dataclass
class PushResult:
    """Per prototype j (arrays of length m unless stated).

    image_index: index of the source image in the push dataset (-1: no image of its class).
    location: (m, 2) grid (h, w) of the source patch.
    distance_before: squared distance ‖p_old − z‖² from the old prototype to the chosen patch z
        (direct form: exactly 0 when the prototype already was that patch; NaN if none found).
    distance_after: squared distance from the new prototype to that patch (≈ 0).
    distance_maps: (m, H, W) squared distances from each *pushed* prototype (its source patch) to
        every patch of its source image, for the high-activation boxes of the provenance (the
        reference code uses the pre-projection prototype's map; after the push that map no longer
        describes the model, and a re-push would report different boxes).
    grid: (H, W).
    """

    image_index: torch.Tensor
    location: torch.Tensor
    distance_before: torch.Tensor
    distance_after: torch.Tensor
    distance_maps: torch.Tensor
    grid: tuple[int, int]


@torch.no_grad()
def push_prototypes(model: torch.nn.Module, loader: DataLoader, rt: Runtime, *, progress=None) -> PushResult:
    """Project every prototype of ``model`` (a ProtoPNet) onto its nearest own-class patch.

    ``loader`` yields (images, labels, indices) of the un-augmented training set. The model is
    modified in place and left in eval mode.
    """
    model.eval()
    identity = model.class_identity.to(rt.device) > 0  # (m, K)
    m, depth = model.num_prototypes, model.prototype_depth
    best = torch.full((m,), float("inf"), device=rt.device)
    best_index = torch.full((m,), -1, dtype=torch.long, device=rt.device)
    best_loc = torch.zeros((m,), dtype=torch.long, device=rt.device)
    best_feat = torch.zeros((m, depth), device=rt.device)
    best_maps: torch.Tensor | None = None
    grid = (0, 0)
    for images, labels, indices in loader:
        with rt.autocast():
            feats = model.features(rt.images(images))
        out = model.head(feats)
        b, _, h, w = out.distances.shape
        grid = (h, w)
        if best_maps is None:
            best_maps = torch.zeros((m, h, w), device=rt.device)
        allowed = identity[:, labels.to(rt.device)].t()  # (B, m): image b may serve prototype j
        flat = out.distances.flatten(2)  # (B, m, HW)
        per_image, loc = flat.min(dim=2)  # (B, m)
        per_image = per_image.masked_fill(~allowed, float("inf"))
        batch_best, b_idx = per_image.min(dim=0)  # (m,)
        better = batch_best < best
        if better.any():
            js = better.nonzero().squeeze(1)
            bi = b_idx[js]
            li = loc[bi, js]
            best[js] = batch_best[js]
            best_index[js] = indices.to(rt.device)[bi]
            best_loc[js] = li
            f = feats.flatten(2)  # (B, D, HW)
            best_feat[js] = f[bi, :, li]
            # the distance map of the *pushed* prototype (= patch li of image bi) on its source image,
            # so that provenance boxes describe the saved model and a re-push reproduces them
            for c in range(0, len(js), 256):  # bounded (256, D, HW) temporaries
                cb, cl = bi[c:c + 256], li[c:c + 256]
                src = f[cb].float()  # (k, D, HW)
                patch = src[torch.arange(len(cb), device=src.device), :, cl]  # (k, D)
                best_maps[js[c:c + 256]] = ((src - patch[:, :, None]) ** 2).sum(dim=1).view(-1, h, w)
        if progress is not None:
            progress(len(images))
    if best_maps is None:
        raise RuntimeError("push over an empty dataset")
    if rt.distributed:
        best, best_index, best_loc, best_feat, best_maps = _gather_best(
            rt, best, best_index, best_loc, best_feat, best_maps)
    found = best_index >= 0
    # Report the distances in the direct form ‖p − z‖² (the expanded form used for the search
    # has rounding error ~1e-6): a prototype that already equals its patch reports exactly 0.
    before = ((model.prototypes.float() - best_feat) ** 2).sum(dim=1)
    before[~found] = float("nan")
    with torch.no_grad():
        protos = model.prototype_vectors
        protos[found] = best_feat[found].view(-1, depth, 1, 1).to(protos.dtype)
    after = ((model.prototypes - best_feat) ** 2).sum(dim=1)
    after[~found] = float("nan")
    h, w = grid
    location = torch.stack([best_loc // w, best_loc % w], dim=1)
    return PushResult(best_index.cpu(), location.cpu(), before.cpu(), after.cpu(), best_maps.cpu(), grid)


def _gather_best(rt: Runtime, best, index, loc, feat, maps):
    """Across ranks, keep for each prototype the candidate with the smallest distance."""
    world = rt.world_size
    gathered = []
    for t in (best, index, loc, feat, maps):
        bufs = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(bufs, t.contiguous())
        gathered.append(torch.stack(bufs))
    g_best, g_index, g_loc, g_feat, g_maps = gathered
    winner = g_best.argmin(dim=0)  # (m,)
    ar = torch.arange(best.shape[0], device=best.device)
    return (g_best[winner, ar], g_index[winner, ar], g_loc[winner, ar], g_feat[winner, ar], g_maps[winner, ar])
