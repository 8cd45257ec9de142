"""ProtoPNet training objective (Chen et al., NeurIPS 2019, §2.2).

``L_ppnet = CE + λ_clst·Clst + λ_sep·Sep + λ_l1·L1`` on plain tensors:

- ``min_distances`` (B, m): min over the H×W grid of the squared-L2 distance maps;
- ``labels`` (B,) long;
- ``class_identity`` (m, K) float in {0, 1}; a column may have several ones and, after
  ProtoPShare merging, a *row* may too (a prototype serving several classes);
- ``last_layer_weight`` (K, m): the weight of the decision layer ``h``;
- ``logits`` (B, K).

A prototype is "own-class" for an image of class y when ``class_identity[j, y] > 0`` and
"other-class" otherwise, so a merged prototype is own-class for every class it serves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from p2p_cli.errors import P2PError

__all__ = ["cluster_cost", "separation_cost", "l1_off_class", "protopnet_loss"]


def _own_class_mask(min_distances: Tensor, labels: Tensor, class_identity: Tensor) -> Tensor:
    """(B, m) bool: prototype j belongs to the class of image b."""
    if min_distances.dim() != 2:
        raise P2PError(f"min_distances must be (B, m), got shape {tuple(min_distances.shape)}")
    b, m = min_distances.shape
    if class_identity.dim() != 2 or class_identity.shape[0] != m:
        raise P2PError(f"class_identity must be (m={m}, K), got shape {tuple(class_identity.shape)}")
    if labels.shape != (b,):
        raise P2PError(f"labels must be (B={b},), got shape {tuple(labels.shape)}")
    return class_identity.t()[labels.to(class_identity.device)] > 0


def _masked_min_mean(min_distances: Tensor, select: Tensor) -> Tensor:
    """Mean over images of ``min_j{d_bj : select_bj}``, skipping images with nothing selected.

    Unselected entries are replaced by +inf (``torch.where``, so they receive no gradient);
    rows that are all +inf are dropped from the mean. If every row is empty the result is
    an exact 0 that still belongs to the graph (zero gradient, never NaN/inf).
    """
    inf = torch.full_like(min_distances, float("inf"))
    per_image = torch.where(select, min_distances, inf).amin(dim=1)  # (B,)
    valid = select.any(dim=1)  # (B,)
    per_image = torch.where(valid, per_image, torch.zeros_like(per_image))
    return per_image.sum() / valid.sum().clamp(min=1).to(per_image.dtype)


def cluster_cost(min_distances: Tensor, labels: Tensor, class_identity: Tensor) -> Tensor:
    """Clst (ProtoPNet §2.2, stage-1 objective): mean over the batch of the min distance to own-class prototypes.

    Shapes: min_distances (B, m), labels (B,), class_identity (m, K) → scalar.
    An image whose class has no prototype left (e.g. all pruned) is excluded from the mean
    (the reference code would instead add the constant ``D``, which has no gradient either);
    a batch where no image has an own-class prototype gives 0.
    """
    own = _own_class_mask(min_distances, labels, class_identity)
    return _masked_min_mean(min_distances, own)


def separation_cost(min_distances: Tensor, labels: Tensor, class_identity: Tensor) -> Tensor:
    """Sep: mean over the batch of the min distance to prototypes *not* of the image's class.

    Shapes as :func:`cluster_cost`. Its weight λ_sep is negative (−0.08): the objective pushes
    other-class prototypes away. An image with no other-class prototype (a prototype merged
    into every class, or K = 1) is excluded from the mean, like :func:`cluster_cost`.
    """
    own = _own_class_mask(min_distances, labels, class_identity)
    return _masked_min_mean(min_distances, ~own)


def l1_off_class(last_layer_weight: Tensor, class_identity: Tensor) -> Tensor:
    """L1 = ‖h ⊙ (1 − class_identityᵀ)‖₁: only the off-class connections of the last layer.

    Shapes: last_layer_weight (K, m), class_identity (m, K) → scalar.
    """
    if last_layer_weight.shape != class_identity.t().shape:
        raise P2PError(
            f"last-layer weight {tuple(last_layer_weight.shape)} does not match class identity "
            f"{tuple(class_identity.shape)} (expected (K, m) and (m, K))"
        )
    off = 1.0 - class_identity.t().to(last_layer_weight.dtype)
    return (last_layer_weight * off).abs().sum()


def protopnet_loss(
    logits: Tensor,
    min_distances: Tensor,
    labels: Tensor,
    class_identity: Tensor,
    last_layer_weight: Tensor,
    *,
    lambda_clst: float = 0.8,
    lambda_sep: float = -0.08,
    lambda_l1: float = 1e-4,
) -> dict[str, Tensor]:
    """Full ProtoPNet loss; returns the unweighted terms and the weighted ``"total"``.

    ``total = ce + λ_clst·clst + λ_sep·sep + λ_l1·l1``. Defaults are the Proto2Proto Cars
    config (λ_clst 0.8 as in the paper; the reference code uses 1.0). For the last-layer
    stage pass ``lambda_clst=0, lambda_sep=0`` (CE + L1 only).

    Shapes: logits (B, K), min_distances (B, m), labels (B,), class_identity (m, K),
    last_layer_weight (K, m). Keys: ``ce``, ``clst``, ``sep``, ``l1``, ``total``.
    """
    ce = F.cross_entropy(logits, labels)
    clst = cluster_cost(min_distances, labels, class_identity)
    sep = separation_cost(min_distances, labels, class_identity)
    l1 = l1_off_class(last_layer_weight, class_identity)
    total = ce + lambda_clst * clst + lambda_sep * sep + lambda_l1 * l1
    return {"ce": ce, "clst": clst, "sep": sep, "l1": l1, "total": total}
