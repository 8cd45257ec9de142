"""A ProtoTree's decision path for one image (Nauta et al., CVPR 2021, §3 and Fig. 1).

Every internal node n of the tree holds one prototype; with ``d_n`` the smallest Euclidean
distance of that prototype to the image's (H, W) grid of add-on patches, the soft tree routes
right ("prototype present") with probability ``exp(−d_n)``. Greedy routing, the tree's
interpretable mode, takes the likelier branch at every node (right iff ``exp(−d_n) > 0.5``) and
predicts the arg-max class of the leaf it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from p2p_cli.explain.local import forward_one
from p2p_cli.runtime.device import Runtime


@dataclass
class PathStep:
    """One node visited by a ProtoTree's greedy routing."""

    prototype: int
    distance: float  # Euclidean min distance d_j
    probability: float  # exp(−d_j): probability of routing right ("prototype present")
    right: bool  # direction taken (p > 0.5)
    location: tuple[int, int]
    distance_map: np.ndarray  # (H, W) distances of the node's prototype to every patch


@dataclass
class TreePath:
    steps: list[PathStep]
    leaf: int
    leaf_distribution: np.ndarray  # (K,)
    predicted: int  # greedy prediction: the leaf's arg-max class
    soft_probabilities: np.ndarray  # (K,) the distributed (soft) tree's ŷ
    leaf_probability: float  # π_leaf(x) in the soft tree


@torch.no_grad()
def tree_path(model: torch.nn.Module, image: torch.Tensor, rt: Runtime) -> TreePath:
    """Greedy routing of a ProtoTree on one uint8 (3, S, S) ``image``: at every node go right iff
    exp(−d) > 0.5, down to a leaf."""
    out = forward_one(model, image, rt)
    dist = out.distances[0].float()  # (m, H, W)
    min_d = out.min_distances[0].float()
    h, w = dist.shape[-2:]
    flat_arg = dist.flatten(1).argmin(dim=1)
    steps = []
    node = model.tree()
    while node.leaf is None:
        j = int(node.prototype)  # type: ignore[arg-type]
        p = float(torch.exp(-min_d[j]))
        loc = int(flat_arg[j])
        steps.append(PathStep(j, float(min_d[j]), p, p > 0.5, (loc // w, loc % w), dist[j].cpu().numpy()))
        node = node.right if p > 0.5 else node.left  # type: ignore[assignment]
    leaf = int(node.leaf)
    dists = model.leaf_distributions()[leaf].float().cpu().numpy()
    pi = model.log_path_probabilities(min_d[None])[0, leaf].exp()
    return TreePath(steps, leaf, dists, int(dists.argmax()), out.logits[0].float().exp().cpu().numpy(), float(pi))
