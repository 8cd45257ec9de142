"""ProtoPShare's merge step (Rymarczyk et al., KDD 2021, and their public code `proto_join.py`), on plain tensors.

**Dissimilarity.** Data-dependent (the paper's default): forward the un-augmented training set
once and keep every image's min distance to every prototype, the (N, m) matrix ``P``; prototype
j's activation vector over the data is column ``P[:, j]``, and two prototypes are as far apart
as their vectors, ``δ(i, j) = Σ_n (P[n, i] − P[n, j])²`` (squared L2, as the public code's
``join_prototypes_by_activations``). Data-independent: the squared L2 distance of the prototype
vectors themselves (the code's ``join_prototypes``).

**One merge step.** Every prototype's nearest-neighbour dissimilarity ``ν_i = min_{j≠i} δ(i, j)``;
the threshold κ is the k-th smallest ν (k = the fraction to merge × m). Then the prototypes are
visited in index order: every not yet merged j with ``δ(i, j) ≤ κ`` is merged into the visited
prototype i at once (star-shaped groups, no chains: a prototype merged into i is not visited
itself). How many prototypes go is therefore not fixed in advance: at least one, and at most k
(ties aside: every merged j has ν_j ≤ κ), often fewer (a mutual nearest pair puts two values
among the k smallest ν but merges once).
"""

from __future__ import annotations

import torch


def squared_l2_dissimilarity(vectors: torch.Tensor) -> torch.Tensor:
    """(m, m) squared L2 distances between the rows of ``vectors`` (m, F), in float64
    (≥ 0, zero diagonal)."""
    v = vectors.double()
    sq = (v * v).sum(dim=1)  # (m,)
    d = sq[:, None] + sq[None, :] - 2.0 * (v @ v.t())
    d = d.clamp_(min=0.0)
    d.fill_diagonal_(0.0)
    return d


def profile_dissimilarity(profiles: torch.Tensor) -> torch.Tensor:
    """ProtoPShare's data-dependent dissimilarity (Rymarczyk et al. 2021): (m, m)
    ``D[i, j] = Σ_n (P[n, i] − P[n, j])²`` between the activation vectors (columns) of
    ``profiles`` (N, m), the min distances of N training images to m prototypes."""
    return squared_l2_dissimilarity(profiles.t())


def vector_dissimilarity(prototypes: torch.Tensor) -> torch.Tensor:
    """ProtoPShare's data-independent dissimilarity: (m, m) ``‖p_i − p_j‖²`` of the prototype
    vectors (m, D)."""
    return squared_l2_dissimilarity(prototypes.flatten(1))


def merge_threshold(dissimilarity: torch.Tensor, k: int) -> float:
    """κ = the k-th smallest (1-based) nearest-neighbour dissimilarity ``min_{j≠i} δ(i, j)``.

    dissimilarity: (m, m) symmetric, m ≥ 2; 1 ≤ k ≤ m."""
    m = dissimilarity.shape[0]
    if m < 2 or not 1 <= k <= m:
        raise ValueError(f"need 1 ≤ k ≤ m and m ≥ 2, got k = {k}, m = {m}")
    off = dissimilarity.double().clone()
    off.fill_diagonal_(float("inf"))
    nearest = off.min(dim=1).values  # (m,)
    return float(torch.sort(nearest).values[k - 1])


def plan_merges(dissimilarity: torch.Tensor, k: int, limit: int | None = None) -> tuple[list[list[int]], float]:
    """One ProtoPShare merge step (Rymarczyk et al. 2021, as `proto_join.py` runs it).

    dissimilarity: (m, m) symmetric; k: the threshold's rank (:func:`merge_threshold`). Visiting
    i = 0, 1, … among the prototypes not yet merged, every other unmerged j with δ(i, j) ≤ κ joins
    i's group (an unmerged j < i within κ of i would have joined j's own visit: δ is symmetric,
    so only j > i are looked at). ``limit`` (optional, p2p's ``--target``): merge at most this many; the visit that
    would pass it takes its nearest candidates first (ties by index) and the step stops there.
    Returns (groups, κ): the groups in increasing survivor order, each ``[survivor, merged…]``
    (merged in increasing index), covering all m prototypes.
    """
    m = dissimilarity.shape[0]
    kappa = merge_threshold(dissimilarity, k)
    budget = m if limit is None else limit
    d = dissimilarity.double().cpu()
    merged = torch.zeros(m, dtype=torch.bool)
    groups: list[list[int]] = []
    for i in range(m):
        if merged[i]:
            continue
        candidates = torch.nonzero((d[i, i + 1:] <= kappa) & ~merged[i + 1:]).flatten() + (i + 1)  # increasing
        if len(candidates) > budget:  # nearest first; stable sort keeps ties in index order
            nearest = torch.sort(d[i, candidates], stable=True).indices[:budget]
            candidates = torch.sort(candidates[nearest]).values
        budget -= len(candidates)
        merged[candidates] = True
        groups.append([i, *candidates.tolist()])
    return groups, kappa
