"""ProtoPShare's data-dependent merge plan (Rymarczyk et al., KDD 2021), on plain tensors.

Forward the un-augmented training set once and keep every image's min distance to every
prototype, the (N, m) matrix ``P``; prototype j's *profile* is column ``P[:, j]``. The
dissimilarity of two prototypes is the squared L2 distance of their profiles,
``Σ_n (P[n, i] − P[n, j])²``. A round takes the pairs in increasing dissimilarity (Kruskal's
order) and joins their groups until ``count`` prototypes are gone, i.e. it merges every pair
below the threshold that removes exactly ``count`` prototypes (the threshold is returned).
"""

from __future__ import annotations

import torch


def profile_dissimilarity(profiles: torch.Tensor) -> torch.Tensor:
    """ProtoPShare's data-dependent dissimilarity: (m, m) squared L2 between profile columns.

    profiles: (N, m) min distances of N training images to m prototypes.
    Returns ``D[i, j] = Σ_n (P[n, i] − P[n, j])²`` in float64 (≥ 0, zero diagonal).
    """
    p = profiles.double()
    sq = (p * p).sum(dim=0)  # (m,)
    d = sq[:, None] + sq[None, :] - 2.0 * (p.t() @ p)
    d = d.clamp_(min=0.0)
    d.fill_diagonal_(0.0)
    return d


def plan_merges(dissimilarity: torch.Tensor, count: int) -> tuple[list[list[int]], float]:
    """Greedy merging of the closest pairs until ``count`` prototypes are gone.

    dissimilarity: (m, m) symmetric. Pairs are taken in increasing dissimilarity (ties by index);
    a pair whose members are already in one group is skipped, otherwise the two groups join, the
    lower survivor index surviving. Returns (groups, threshold): ``m − count`` groups in
    increasing survivor order, each ``[survivor, absorbed…]`` (members in merge order), and the
    dissimilarity of the last merged pair (every merged pair is at or below it; NaN when
    ``count`` is 0).
    """
    m = dissimilarity.shape[0]
    if not 0 <= count < m:
        raise ValueError(f"cannot remove {count} of {m} prototypes")
    parent = list(range(m))
    members: dict[int, list[int]] = {j: [j] for j in range(m)}

    def root(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    threshold = float("nan")
    removed = 0
    if count:
        iu, ju = torch.triu_indices(m, m, offset=1)
        values = dissimilarity[iu, ju]
        order = torch.sort(values, stable=True).indices
        for i, j, v in zip(iu[order].tolist(), ju[order].tolist(), values[order].tolist(), strict=True):
            a, b = root(i), root(j)
            if a == b:
                continue
            keep, gone = min(a, b), max(a, b)
            parent[gone] = keep
            members[keep].extend(members.pop(gone))
            threshold = v
            removed += 1
            if removed == count:
                break
    return [members[r] for r in sorted(members)], threshold
