"""ProtoPNet's local explanation of one image ("this looks like that", Chen et al., NeurIPS 2019,
Fig. 2; Proto2Proto Fig. 1 shows it for a teacher and its students).

A ProtoPNet with m prototypes and K classes sees an image through an (H, W) grid of add-on
patches. ``d_j`` (shape (H, W)) holds the squared L2 distances of prototype j to every patch,
its minimum is the prototype's distance, and the similarity is ``s_j = log((min d_j + 1) /
(min d_j + ε))``. The logit of class c is ``Σ_j w_cj · s_j`` with the last layer's weights
w (K, m); the *contribution* of prototype j to class c is ``s_j · w_cj`` ("points contributed"
in ProtoPNet's Fig. 2), and the top-k explanation lists the k largest contributions. Where a
prototype fires is its similarity map upsampled to the image and the box around the pixels
at or above the 95th percentile (ProtoPNet §2.4).

Everything here returns plain arrays and numbers; drawing is :mod:`p2p_cli.viz`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from p2p_cli.data.transforms import normalize
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.models.maps import percentile_box, upsampled_similarity
from p2p_cli.models.protopnet import ProtoOutput, ProtoPNet, PrototypeNetwork, log_similarity
from p2p_cli.runtime.device import Runtime


@dataclass
class Evidence:
    """One prototype's part in a decision (arrays are the model's grid, (H, W))."""

    rank: int
    prototype: int
    classes: list[int]
    similarity: float
    weight: float
    contribution: float
    distance: float
    location: tuple[int, int]
    distance_map: np.ndarray  # (H, W) squared distances of the prototype to every patch


@dataclass
class Explanation:
    """A model's decision on one image and the top-k prototypes for the explained class."""

    logits: np.ndarray  # (K,)
    probabilities: np.ndarray  # (K,)
    predicted: int
    explained: int
    evidence: list[Evidence]
    similarities: np.ndarray  # (m,)
    grid: tuple[int, int]

    @property
    def explained_logit(self) -> float:
        return float(self.logits[self.explained])


def class_index(name: str, classes: list[str]) -> int:
    """Index of class ``name`` (exact, or with spaces for underscores, or case-insensitive)."""
    for candidate in (name, name.replace(" ", "_")):
        if candidate in classes:
            return classes.index(candidate)
    lowered = [c.lower() for c in classes]
    for candidate in (name.lower(), name.replace(" ", "_").lower()):
        if candidate in lowered:
            return lowered.index(candidate)
    shown = ", ".join(classes[:8]) + (", …" if len(classes) > 8 else "")
    raise P2PError(f"unknown class '{name}'{did_you_mean(name, classes)}; classes: {shown}")


@torch.no_grad()
def forward_one(model: PrototypeNetwork, image: torch.Tensor, rt: Runtime) -> ProtoOutput:
    """``model`` (eval mode) on one uint8 (3, S, S) ``image``: a batch-of-one output, the backbone
    under the runtime's autocast, the prototype head in fp32."""
    model.eval()
    x = rt.images(normalize(image)[None])
    with rt.autocast():
        feats = model.features(x)
    return model.head(feats)


@torch.no_grad()
def explain(model: ProtoPNet, image: torch.Tensor, rt: Runtime, *, top_k: int = 5,
            class_index: int | None = None) -> Explanation:
    """Run ``model`` on one uint8 (3, S, S) ``image``; rank prototypes by contribution
    ``s_j · w_cj`` to class c (the prediction, or ``class_index``)."""
    out = forward_one(model, image, rt)
    dist = out.distances[0].float()  # (m, H, W)
    min_d = out.min_distances[0].float()  # (m,)
    sims = log_similarity(min_d)
    logits = out.logits[0].float()
    predicted = int(logits.argmax())
    c = predicted if class_index is None else int(class_index)
    weights = model.last_layer.weight[c].float()  # (m,)
    contrib = sims * weights
    k = max(1, min(int(top_k), model.num_prototypes))
    order = torch.argsort(contrib, descending=True)[:k]
    h, w = dist.shape[-2:]
    flat_arg = dist.flatten(1).argmin(dim=1)
    identity = model.class_identity.cpu()
    evidence = []
    for rank, j in enumerate(order.tolist(), start=1):
        loc = int(flat_arg[j])
        evidence.append(Evidence(
            rank=rank, prototype=j, classes=torch.nonzero(identity[j] > 0).flatten().tolist(),
            similarity=float(sims[j]), weight=float(weights[j]), contribution=float(contrib[j]),
            distance=float(min_d[j]), location=(loc // w, loc % w), distance_map=dist[j].cpu().numpy()))
    return Explanation(logits=logits.cpu().numpy(), probabilities=torch.softmax(logits, 0).cpu().numpy(),
                       predicted=predicted, explained=c, evidence=evidence, similarities=sims.cpu().numpy(),
                       grid=(int(h), int(w)))


def activation(distance_map: np.ndarray, size: tuple[int, int], percentile: float = 95.0
               ) -> tuple[np.ndarray, list[int]]:
    """ProtoPNet's activation map and box at ``size`` = (height, width): the similarity of the
    (H, W) ``distance_map`` upsampled bicubically (float32 (height, width)) and its
    ``percentile`` box [x0, y0, x1, y1] (x1, y1 exclusive)."""
    up = upsampled_similarity(torch.from_numpy(np.asarray(distance_map, dtype=np.float32)), size)
    return up.numpy(), percentile_box(up, percentile)
