"""ProtoTree (Nauta et al., CVPR 2021): a soft binary decision tree over prototypes.

backbone f → add-on g (1×1 conv + sigmoid) → one D×1×1 prototype per internal node →
routing → leaves. The forward pass returns the same :class:`ProtoOutput` as ProtoPNet
(logits, min distances (B, m), distance maps (B, m, H, W), add-on features), so distillation,
push and the metrics work unchanged. Differences a reader must know:

- distances are **Euclidean** (not squared): ``d = sqrt(relu(‖z‖² − 2 z·p + ‖p‖²) + ε)``;
- node j routes an image **right** with probability ``p_j = exp(−d_j)`` (d_j = min distance of
  prototype j over the grid: "the prototype is present") and left with ``1 − p_j``;
- ``logits`` are ``log ŷ`` with ``ŷ = Σ_leaves π_ℓ(x)·σ(c_ℓ)`` a probability vector, so
  ``cross_entropy(logits, y)`` is exactly the NLL of the paper.

The tree's shape is one buffer, ``routes`` (L, m) int8: ``routes[ℓ, j]`` is +1 if the path to
leaf ℓ goes right at the node of prototype j, −1 if it goes left, 0 if j is not on that path.
A complete tree of depth d has L = 2^d leaves and m = 2^d − 1 prototypes (breadth-first order,
leaves left to right); pruning deletes rows and columns. Path probabilities are then one
matrix product: ``log π = R·log p + Lm·log(1 − p)`` (R, Lm the ±1 indicator matrices).

Leaves: ``leaf_params`` c (L, K), σ(c_ℓ) = softmax(c_ℓ) in both modes. ``leaf_update="gradient"``:
c ~ N(0, 1), trained by backprop. ``"derivative-free"`` (the paper's default): c starts at zero
(every leaf uniform) and is updated after every optimizer step by :meth:`ProtoTree.update_leaves`
(no gradients: the paper's derivative-free update, as their public code applies it). Pruning
(:meth:`ProtoTree.prune_`) removes the subtrees whose leaves all have max σ ≤ τ.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from p2p_cli.models.backbones import create_backbone
from p2p_cli.models.protopnet import ProtoOutput, PrototypeNetwork, squared_l2_distances
from p2p_cli.models.registry import get_backbone_spec

if TYPE_CHECKING:
    from p2p_cli.io.config import TrainConfig

LEAF_UPDATES = ("derivative-free", "gradient")
INFERENCE_MODES = ("distributed", "sample_max", "greedy")
_EPS = 1e-12


def default_depth(num_classes: int) -> int:
    """ceil(log2 K) + 1: 9 for 200 classes (the paper's CUB/Cars setting), 5 for 10."""
    return max(1, math.ceil(math.log2(max(num_classes, 2)))) + 1


@dataclass(frozen=True)
class ProtoTreeConfig:
    backbone: str
    num_classes: int
    depth: int | None = None
    prototype_depth: int | None = None
    feature_stride: int | None = None
    leaf_update: str = "derivative-free"
    log_probabilities: bool = True
    arch: str = field(default="prototree")

    @classmethod
    def from_train_config(cls, cfg: TrainConfig, num_classes: int, backbone: str | None = None) -> ProtoTreeConfig:
        """The architecture keys of a run config (``backbone`` overrides ``cfg.backbone``)."""
        return cls(backbone=backbone or cfg.backbone, num_classes=num_classes, depth=cfg.depth,
                   prototype_depth=cfg.prototype_depth, feature_stride=cfg.feature_stride,
                   leaf_update=cfg.leaf_update, log_probabilities=cfg.log_probabilities)

    def resolved(self) -> ProtoTreeConfig:
        spec = get_backbone_spec(self.backbone)
        return ProtoTreeConfig(backbone=self.backbone, num_classes=self.num_classes,
                               depth=self.depth or default_depth(self.num_classes),
                               prototype_depth=self.prototype_depth or spec.prototype_depth,
                               feature_stride=self.feature_stride or spec.feature_stride,
                               leaf_update=self.leaf_update, log_probabilities=self.log_probabilities)

    def to_dict(self) -> dict:
        return asdict(self)


def complete_routes(depth: int) -> torch.Tensor:
    """(2^d, 2^d − 1) int8 routes of a complete tree (internal nodes breadth-first, root 0)."""
    leaves, nodes = 2 ** depth, 2 ** depth - 1
    routes = torch.zeros(leaves, nodes, dtype=torch.int8)
    for leaf in range(leaves):
        node = 0
        for level in range(depth):
            bit = (leaf >> (depth - 1 - level)) & 1
            routes[leaf, node] = 1 if bit else -1
            node = 2 * node + 1 + bit
    return routes


@dataclass
class Node:
    """One node of the tree reconstructed from ``routes``: internal (prototype j) or leaf ℓ."""

    prototype: int | None = None
    leaf: int | None = None
    left: Node | None = None
    right: Node | None = None

    def leaves(self) -> list[int]:
        if self.leaf is not None:
            return [self.leaf]
        return self.left.leaves() + self.right.leaves()  # type: ignore[union-attr]

    def prototypes(self) -> list[int]:
        if self.leaf is not None:
            return []
        return [self.prototype, *self.left.prototypes(), *self.right.prototypes()]  # type: ignore[list-item,union-attr]


def tree_from_routes(routes: torch.Tensor) -> Node:
    """The nested tree that ``routes`` (L, m) describes."""
    r = routes.to(torch.int64).cpu()

    def build(leaves: list[int], used: set[int]) -> Node:
        if len(leaves) == 1:
            return Node(leaf=leaves[0])
        sub = r[leaves]
        for j in range(r.shape[1]):
            if j in used:
                continue
            col = sub[:, j]
            if bool((col != 0).all()) and bool((col > 0).any()) and bool((col < 0).any()):
                left = [ell for ell in leaves if r[ell, j] < 0]
                right = [ell for ell in leaves if r[ell, j] > 0]
                return Node(prototype=j, left=build(left, used | {j}), right=build(right, used | {j}))
        raise ValueError("routes do not describe a binary tree")

    return build(list(range(r.shape[0])), set())


class ProtoTree(PrototypeNetwork):
    """Soft binary prototype tree (see the module docstring for the maths)."""

    arch = "prototree"

    def __init__(self, config: ProtoTreeConfig, *, pretrained: bool = False,
                 routes: torch.Tensor | None = None) -> None:
        super().__init__()
        config = config.resolved()
        if config.leaf_update not in LEAF_UPDATES:
            raise ValueError(f"unknown leaf_update {config.leaf_update!r}")
        self.config = config
        spec = get_backbone_spec(config.backbone)
        self.backbone, channels = create_backbone(spec, feature_stride=config.feature_stride, pretrained=pretrained)
        depth = int(config.prototype_depth)  # type: ignore[arg-type]
        self.add_on = nn.Sequential(nn.Conv2d(channels, depth, 1), nn.Sigmoid())
        nn.init.kaiming_normal_(self.add_on[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.add_on[0].bias)
        if routes is None:
            routes = complete_routes(int(config.depth))  # type: ignore[arg-type]
        leaves, m = routes.shape
        self.register_buffer("routes", routes.clone().to(torch.int8))
        self.prototype_vectors = nn.Parameter(torch.randn(m, depth, 1, 1) * 0.1 + 0.5)  # N(0.5, 0.1)
        k = config.num_classes
        if self.derivative_free:  # zeros: every leaf starts uniform (Nauta et al. 2021, public code)
            self.leaf_params = nn.Parameter(torch.zeros(leaves, k), requires_grad=False)
        else:  # the public code's gradient-trained leaves: randn
            self.leaf_params = nn.Parameter(torch.randn(leaves, k))
        self._epoch_start: torch.Tensor | None = None  # c at the start of the epoch (not saved)

    # -- shapes -------------------------------------------------------------------------------
    @property
    def derivative_free(self) -> bool:
        return self.config.leaf_update == "derivative-free"

    @property
    def num_leaves(self) -> int:
        return self.leaf_params.shape[0]

    def tree(self) -> Node:
        return tree_from_routes(self.routes)

    def leaf_distributions(self) -> torch.Tensor:
        """σ(c) = softmax(c) per leaf: (L, K), rows sum to 1 (Nauta et al. 2021, §3)."""
        return torch.softmax(self.leaf_params.float(), dim=1)

    def log_leaf_distributions(self) -> torch.Tensor:
        """log σ(c) = log_softmax(c): (L, K), finite even where σ underflows to 0."""
        return torch.log_softmax(self.leaf_params.float(), dim=1)

    @property
    def class_identity(self) -> torch.Tensor:
        """(m, K) 0/1: class k is the arg-max class of some leaf below node j (the push's "own
        class" images for prototype j). Derived from the leaves, never stored."""
        leaf_class = self.leaf_distributions().argmax(dim=1)  # (L,)
        onehot = torch.nn.functional.one_hot(leaf_class, self.config.num_classes).float()  # (L, K)
        below = (self.routes != 0).float().t()  # (m, L)
        return (below @ onehot > 0).float()

    # -- routing ------------------------------------------------------------------------------
    def _indicators(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.routes.to(device)
        return (r > 0).float(), (r < 0).float()

    def log_path_probabilities(self, min_distances: torch.Tensor) -> torch.Tensor:
        """log π (B, L) from Euclidean min distances (B, m): log-space, ``log p = −d``."""
        d = min_distances.float()
        right, left = self._indicators(d.device)
        log_right = -d
        log_left = torch.log(-torch.expm1(-d.clamp_min(1e-7)))  # log(1 − exp(−d)), finite
        return log_right @ right.t() + log_left @ left.t()

    def path_probabilities(self, min_distances: torch.Tensor) -> torch.Tensor:
        """π (B, L) as plain products over each leaf's path (the non-log option)."""
        d = min_distances.float()
        right, left = self._indicators(d.device)
        p = torch.exp(-d)[:, None, :]  # (B, 1, m)
        factors = right[None] * p + left[None] * (1 - p) + (1 - right - left)[None]  # (B, L, m)
        return factors.prod(dim=2)

    def logits_from_min_distances(self, min_distances: torch.Tensor) -> torch.Tensor:
        """log ŷ (B, K), ŷ = Σ_ℓ π_ℓ σ(c_ℓ) — log-space or plain per ``log_probabilities``."""
        if self.config.log_probabilities:
            log_pi = self.log_path_probabilities(min_distances)
            log_dist = self.log_leaf_distributions().to(min_distances.device)
            return torch.logsumexp(log_pi[:, :, None] + log_dist[None], dim=1)
        dist = self.leaf_distributions().to(min_distances.device)
        return torch.log(self.path_probabilities(min_distances) @ dist + _EPS)

    def similarity(self, min_distances: torch.Tensor) -> torch.Tensor:
        """``exp(−d)``, any shape: the probability of routing right at the prototype's node (Nauta et al. 2021)."""
        return torch.exp(-min_distances)

    def greedy_leaves(self, min_distances: torch.Tensor) -> torch.Tensor:
        """(B,) the leaf reached by following, at every node, the more probable side (p > 0.5)."""
        go_right = (torch.exp(-min_distances.float()) > 0.5).float()  # (B, m)
        right, left = self._indicators(min_distances.device)
        mismatches = (1 - go_right) @ right.t() + go_right @ left.t()  # (B, L)
        return mismatches.argmin(dim=1)

    def predictions(self, min_distances: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted class per image (B,) in the three inference modes of the paper."""
        dist = self.leaf_distributions().to(min_distances.device)
        soft = self.logits_from_min_distances(min_distances).argmax(1)
        sample_max = dist[self.log_path_probabilities(min_distances).argmax(1)].argmax(1)
        greedy = dist[self.greedy_leaves(min_distances)].argmax(1)
        return {"distributed": soft, "sample_max": sample_max, "greedy": greedy}

    # -- forward ------------------------------------------------------------------------------
    def head(self, features: torch.Tensor) -> ProtoOutput:
        with torch.autocast(device_type=features.device.type, enabled=False):
            distances = torch.sqrt(squared_l2_distances(features, self.prototypes) + 1e-10)
            min_distances = distances.flatten(2).amin(dim=2)
            logits = self.logits_from_min_distances(min_distances)
        return ProtoOutput(logits, min_distances, distances, features)

    # -- derivative-free leaves ---------------------------------------------------------------
    @torch.no_grad()
    def leaf_statistics(self, min_distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's update term (L, K): ``u_ℓ = Σ_b π_ℓ(x_b) · σ_ℓ ⊙ y_b / ŷ(x_b)``.

        Nauta et al. 2021's derivative-free update (after Kontschieder et al. 2015). With y_b
        one-hot only the label's entry is non-zero,
        ``u_ℓ,k = Σ_b [y_b = k] · π_ℓ(x_b)·σ_ℓ,k / ŷ_k(x_b)``, and each image's entries sum to 1
        over the leaves (it is the posterior that leaf ℓ explained image b).
        min_distances: (B, m) Euclidean; labels: (B,)."""
        log_dist = self.log_leaf_distributions().to(min_distances.device)  # (L, K)
        log_pi = self.log_path_probabilities(min_distances)  # (B, L)
        joint = log_pi + log_dist.t()[labels]  # (B, L): log π_ℓ(x_b) + log σ_ℓ,y_b
        resp = torch.softmax(joint, dim=1)  # ÷ ŷ_y(x_b) = Σ_ℓ π_ℓ σ_ℓ,y
        onehot = torch.nn.functional.one_hot(labels, self.config.num_classes).to(resp.dtype)  # (B, K)
        return resp.t() @ onehot

    @torch.no_grad()
    def begin_leaf_epoch(self) -> None:
        """Remember c at the start of an epoch: :meth:`update_leaves` removes 1/batches of it per step."""
        self._epoch_start = self.leaf_params.detach().float().clone()

    @torch.no_grad()
    def update_leaves(self, statistics: torch.Tensor, batches: int) -> None:
        """Nauta et al. 2021's derivative-free step after an optimizer step, as their public code
        runs it within an epoch:

        ``c ← max(c − c_start / n_batches, 0) + u``, with c_start the parameters at the start of
        the epoch (:meth:`begin_leaf_epoch`), n_batches the batches per epoch and u (L, K) the
        batch's :meth:`leaf_statistics`. Over a whole epoch c_start is removed and the epoch's
        soft counts Σ u take its place."""
        if self._epoch_start is None:
            raise RuntimeError("update_leaves before begin_leaf_epoch")
        start = self._epoch_start.to(self.leaf_params.device)
        new = (self.leaf_params.data.float() - start / max(batches, 1)).clamp_min(0) + statistics.float()
        self.leaf_params.data.copy_(new.to(self.leaf_params.dtype))

    # -- pruning ------------------------------------------------------------------------------
    def prunable_leaves(self, threshold: float) -> torch.Tensor:
        """(L,) bool: the leaf's max σ ≤ ``threshold`` (Nauta et al. 2021, §3 "Pruning")."""
        return self.leaf_distributions().amax(dim=1) <= threshold

    @torch.no_grad()
    def prune_(self, threshold: float) -> dict[str, int]:
        """Nauta et al. 2021, §3 "Pruning": remove every maximal subtree whose leaves all have
        max σ ≤ ``threshold``, with its parent node; the sibling subtree takes the parent's
        place. As in their public code (``prune.py``) the root is never removed: a prunable
        subtree hanging directly from the root is kept (with everything in it), and so is a
        tree prunable everywhere. In place; returns the sizes before and after."""
        before = {"leaves_before": self.num_leaves, "prototypes_before": self.num_prototypes}
        bad = self.prunable_leaves(threshold).cpu()
        drop_leaves: set[int] = set()
        drop_nodes: set[int] = set()

        def visit(node: Node, is_root: bool) -> bool:  # True if every leaf below is prunable
            if node.leaf is not None:
                return bool(bad[node.leaf])
            lp, rp = visit(node.left, False), visit(node.right, False)  # type: ignore[arg-type]
            if (lp and rp) or is_root:
                return lp and rp
            for child, prunable in ((node.left, lp), (node.right, rp)):
                if prunable:
                    drop_leaves.update(child.leaves())  # type: ignore[union-attr]
                    drop_nodes.update(child.prototypes())  # type: ignore[union-attr]
                    drop_nodes.add(node.prototype)  # type: ignore[arg-type]
            return False

        visit(self.tree(), True)
        keep_l = [i for i in range(self.num_leaves) if i not in drop_leaves]
        keep_m = [j for j in range(self.num_prototypes) if j not in drop_nodes]
        self._select(keep_l, keep_m)
        return {**before, "leaves_after": self.num_leaves, "prototypes_after": self.num_prototypes}

    def _select(self, leaves: list[int], prototypes: list[int]) -> None:
        li = torch.tensor(leaves, dtype=torch.long, device=self.routes.device)
        mi = torch.tensor(prototypes, dtype=torch.long, device=self.routes.device)
        self.routes = self.routes[li][:, mi].contiguous()
        self.prototype_vectors = nn.Parameter(self.prototype_vectors.data[mi.to(self.prototype_vectors.device)].clone(),
                                              requires_grad=self.prototype_vectors.requires_grad)
        self.leaf_params = nn.Parameter(self.leaf_params.data[li.to(self.leaf_params.device)].clone(),
                                        requires_grad=self.leaf_params.requires_grad)

    def resize_like(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Give routes, prototypes and leaves the shapes of ``state_dict`` (a pruned tree's)."""
        routes = state_dict.get("routes")
        if routes is None or tuple(routes.shape) == tuple(self.routes.shape):
            return
        leaves, m = routes.shape
        dev = self.prototype_vectors.device
        self.routes = routes.clone().to(device=self.routes.device, dtype=torch.int8)
        self.prototype_vectors = nn.Parameter(torch.zeros(m, self.prototype_depth, 1, 1, device=dev),
                                              requires_grad=self.prototype_vectors.requires_grad)
        self.leaf_params = nn.Parameter(torch.zeros(leaves, self.config.num_classes, device=dev),
                                        requires_grad=self.leaf_params.requires_grad)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        self.resize_like(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def align_to(self, teacher: nn.Module, *, copy_head: bool) -> None:
        """Distillation: take the teacher tree's shape (index-aligned prototypes) and, with
        ``copy_head``, its leaves."""
        if not isinstance(teacher, ProtoTree):
            raise ValueError("a ProtoTree student needs a ProtoTree teacher")
        self.resize_like({"routes": teacher.routes})
        with torch.no_grad():
            self.prototype_vectors.normal_(0.5, 0.1)
            if copy_head:
                self.leaf_params.copy_(teacher.leaf_params)
            elif self.derivative_free:  # the paper's start: c = 0, every leaf uniform
                self.leaf_params.zero_()
            else:
                self.leaf_params.normal_(0.0, 1.0)

    @staticmethod
    def structure_from(tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor | None]:
        """Constructor arguments that fix the shape, from a saved state dict."""
        return {"routes": (tensors or {}).get("routes")}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone": list(self.backbone.parameters()),
            "add_on": list(self.add_on.parameters()),
            "prototypes": [self.prototype_vectors],
            "leaves": [self.leaf_params],
        }
