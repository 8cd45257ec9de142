"""ProtoPNet's k-NN prototype pruning test (Chen et al., NeurIPS 2019, §2.5 "prototype pruning").

For each prototype take the k (6) training images whose closest patch is nearest to it; the
prototype is dropped when fewer than k' (3) of them belong to its class(es).
"""

from __future__ import annotations

import torch


def knn_keep(profiles: torch.Tensor, labels: torch.Tensor, class_identity: torch.Tensor, k: int, k_min: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """ProtoPNet's k-NN pruning test.

    profiles: (N, m) min distances (each image's closest patch); labels: (N,); class_identity (m, K).
    For prototype j, among the k images nearest to it, count those of one of j's classes; keep j
    when the count is ≥ ``k_min``. Returns (keep (m,) bool, own-class counts (m,) long).
    """
    k = min(k, profiles.shape[0])
    nearest = profiles.topk(k, dim=0, largest=False).indices  # (k, m)
    own = (class_identity.t()[labels] > 0)  # (N, m): image n is of one of prototype j's classes
    counts = own.gather(0, nearest).sum(dim=0)
    return counts >= k_min, counts
