"""ProtoPNet (Chen et al., NeurIPS 2019, §2.1).

backbone f → add-on g → prototype layer (squared L2) → log similarity → last layer h.
Images (B, 3, S, S) → features (B, D, H, W) → distance maps (B, m, H, W) → min distances
(B, m) → logits (B, K). One forward pass returns everything training, distillation and the
metrics need.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
from torch import nn

from p2p_cli.models.backbones import create_backbone
from p2p_cli.models.registry import get_backbone_spec

if TYPE_CHECKING:
    from p2p_cli.io.config import TrainConfig


@dataclass(frozen=True)
class ProtoPNetConfig:
    """Everything needed to rebuild a ProtoPNet's architecture (stored in checkpoint metadata).

    ``prototype_depth``, ``add_on`` and ``feature_stride`` left as ``None`` take the backbone
    family's defaults from the registry; :meth:`resolved` fills them in.
    """

    backbone: str
    num_classes: int
    prototypes_per_class: int = 10
    prototype_depth: int | None = None
    add_on: str | None = None
    feature_stride: int | None = None
    arch: str = field(default="protopnet")

    @classmethod
    def from_train_config(cls, cfg: TrainConfig, num_classes: int, backbone: str | None = None) -> ProtoPNetConfig:
        """The architecture keys of a run config (``backbone`` overrides ``cfg.backbone``)."""
        return cls(backbone=backbone or cfg.backbone, num_classes=num_classes,
                   prototypes_per_class=cfg.prototypes_per_class, prototype_depth=cfg.prototype_depth,
                   add_on=cfg.add_on, feature_stride=cfg.feature_stride)

    def resolved(self) -> ProtoPNetConfig:
        spec = get_backbone_spec(self.backbone)
        return ProtoPNetConfig(
            backbone=self.backbone,
            num_classes=self.num_classes,
            prototypes_per_class=self.prototypes_per_class,
            prototype_depth=self.prototype_depth or spec.prototype_depth,
            add_on=self.add_on or spec.add_on,
            feature_stride=self.feature_stride or spec.feature_stride,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class ProtoOutput(NamedTuple):
    """What one forward pass returns.

    logits: (B, K); min_distances: (B, m); distances: (B, m, H, W) squared L2;
    features: (B, D, H, W) add-on output ω(x) (sigmoid, in [0, 1]).
    """

    logits: torch.Tensor
    min_distances: torch.Tensor
    distances: torch.Tensor
    features: torch.Tensor


def make_add_on(in_channels: int, depth: int, kind: str) -> nn.Sequential:
    """The add-on g of ProtoPNet (Chen et al. 2019, §2.1): (B, C, H, W) → (B, D, H, W) in [0, 1].

    ``regular``: Conv1×1(C→D) → ReLU → Conv1×1(D→D) → Sigmoid.
    ``bottleneck``: pairs of 1×1 convs halving the channels until D, ReLU between, a final
    Sigmoid (ProtoPNet's bottleneck add-on). Kaiming-normal (fan_out, relu), zero bias.
    """
    layers: list[nn.Module] = []
    if kind == "regular":
        layers = [nn.Conv2d(in_channels, depth, 1), nn.ReLU(), nn.Conv2d(depth, depth, 1), nn.Sigmoid()]
    elif kind == "bottleneck":
        channels = in_channels
        while channels > depth or not layers:
            out = max(depth, channels // 2)
            layers += [nn.Conv2d(channels, out, 1), nn.ReLU(), nn.Conv2d(out, out, 1)]
            layers.append(nn.ReLU() if out > depth else nn.Sigmoid())
            channels = out
    else:
        raise ValueError(f"unknown add-on type {kind!r}")
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def class_identity_matrix(num_classes: int, per_class: int) -> torch.Tensor:
    """(m, K) one-hot: prototype j belongs to class j // per_class."""
    m = num_classes * per_class
    identity = torch.zeros(m, num_classes)
    identity[torch.arange(m), torch.arange(m) // per_class] = 1.0
    return identity


def squared_l2_distances(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``relu(‖z‖² − 2 z·p + ‖p‖²)`` between every patch and every prototype (Chen et al. 2019, §2.1).

    features: (B, D, H, W); prototypes: (m, D). Returns (B, m, H, W), computed in fp32.
    """
    z = features.float()
    p = prototypes.float()
    z2 = (z * z).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    p2 = (p * p).sum(dim=1).view(1, -1, 1, 1)  # (1, m, 1, 1)
    zp = torch.einsum("bdhw,md->bmhw", z, p)
    return torch.relu(z2 - 2.0 * zp + p2)


def min_distances_at_argmin(features: torch.Tensor, prototypes: torch.Tensor, distances: torch.Tensor
                            ) -> torch.Tensor:
    """Each prototype's minimum squared distance, recomputed as ``Σ_d (z_d − p_d)²`` at its arg-min cell.

    features: (B, D, H, W); prototypes: (m, D); distances: (B, m, H, W) from
    :func:`squared_l2_distances`, which only picks the cell. The expanded form
    ``‖z‖² − 2 z·p + ‖p‖²`` loses ~1e-7·‖z‖² to cancellation, and right after a push the nearest
    patch *is* the prototype (d ≈ 0), where ``log((d + 1)/(d + 1e-4))`` turns that rounding into
    errors of 1e-3 in the similarity — different on every machine and thread count. Recomputed
    directly, the error scales with the distance itself. Same value and gradient in exact
    arithmetic (∂/∂z = 2(z − p) either way). Returns (B, m) fp32.
    """
    z = features.float().flatten(2)  # (B, D, HW)
    cell = distances.flatten(2).argmin(dim=2)  # (B, m)
    nearest = torch.gather(z, 2, cell.unsqueeze(1).expand(-1, z.shape[1], -1))  # (B, D, m)
    return (nearest - prototypes.float().t().unsqueeze(0)).square().sum(dim=1)


def log_similarity(distances: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """ProtoPNet's similarity ``log((d + 1) / (d + ε))``, elementwise, any shape."""
    return torch.log((distances + 1.0) / (distances + eps))


class PrototypeNetwork(nn.Module):
    """What every prototypical architecture shares: ``backbone`` → ``add_on`` features and a
    ``prototype_vectors`` parameter (m, D, 1, 1). Subclasses build those and define ``head``.

    The protocol training, distillation and the metrics rely on (ProtoPNet and ProtoTree both
    implement it): ``arch`` (the registry key, see ``models/factory.py``), ``config`` (rebuilds the
    architecture), ``class_identity`` (m, K) 0/1, :meth:`head`, :meth:`logits_from_min_distances`,
    :meth:`similarity`, :meth:`parameter_groups` and :meth:`align_to`.
    """

    arch: ClassVar[str]
    backbone: nn.Module
    add_on: nn.Module
    prototype_vectors: nn.Parameter
    class_identity: torch.Tensor

    @property
    def num_prototypes(self) -> int:
        return self.prototype_vectors.shape[0]

    @property
    def prototype_depth(self) -> int:
        return self.prototype_vectors.shape[1]

    @property
    def prototypes(self) -> torch.Tensor:
        """(m, D) view of the prototype vectors."""
        return self.prototype_vectors.flatten(1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Add-on features ω(x): (B, D, H, W) in fp32 (the backbone may run under autocast)."""
        feats = self.backbone(images)
        with torch.autocast(device_type=feats.device.type, enabled=False):
            return self.add_on(feats.float().contiguous())

    def head(self, features: torch.Tensor) -> ProtoOutput:
        """Prototype layer and decision on add-on features (B, D, H, W)."""
        raise NotImplementedError

    def logits_from_min_distances(self, min_distances: torch.Tensor) -> torch.Tensor:
        """The decision alone: min distances (B, m) → logits (B, K)."""
        raise NotImplementedError

    def similarity(self, min_distances: torch.Tensor) -> torch.Tensor:
        """Prototype similarity of distances, any shape: ProtoPNet's ``log((d + 1)/(d + 1e-4))``
        (Chen et al., NeurIPS 2019, §2.1); a ProtoTree overrides it."""
        return log_similarity(min_distances)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups (``backbone``, ``add_on``, ``prototypes`` and the head's:
        ``last_layer`` or ``leaves``); training stages select from these."""
        raise NotImplementedError

    def align_to(self, teacher: nn.Module, *, copy_head: bool) -> None:
        """Distillation: take the teacher's shape where it must match, and with ``copy_head`` its head."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> ProtoOutput:
        return self.head(self.features(images))


class ProtoPNet(PrototypeNetwork):
    """ProtoPNet with m = K · prototypes_per_class prototypes of shape D×1×1.

    Buffers: ``class_identity`` (m, K) — after ProtoPShare merging a prototype may serve several
    classes, and m may be any number (the model is rebuilt from the identity's shape).
    """

    arch = "protopnet"

    def __init__(self, config: ProtoPNetConfig, *, pretrained: bool = False,
                 class_identity: torch.Tensor | None = None) -> None:
        super().__init__()
        config = config.resolved()
        self.config = config
        spec = get_backbone_spec(config.backbone)
        self.backbone, channels = create_backbone(spec, feature_stride=config.feature_stride,
                                                  pretrained=pretrained)
        depth = int(config.prototype_depth)  # type: ignore[arg-type]
        self.add_on = make_add_on(channels, depth, str(config.add_on))
        if class_identity is None:
            class_identity = class_identity_matrix(config.num_classes, config.prototypes_per_class)
        m = class_identity.shape[0]
        self.prototype_vectors = nn.Parameter(torch.rand(m, depth, 1, 1))
        self.register_buffer("class_identity", class_identity.clone().float())
        self.last_layer = nn.Linear(m, config.num_classes, bias=False)
        self.set_last_layer_incorrect_connection(-0.5)

    def set_last_layer_incorrect_connection(self, incorrect_strength: float = -0.5) -> None:
        """h (K, m) ← +1 for own-class connections, ``incorrect_strength`` elsewhere (Chen et al.
        2019, §2.2: the initialisation that the last-layer stage then sparsifies)."""
        positive = self.class_identity.t()  # (K, m)
        with torch.no_grad():
            self.last_layer.weight.copy_(positive + incorrect_strength * (1 - positive))

    # -- forward ------------------------------------------------------------------------------
    def head(self, features: torch.Tensor) -> ProtoOutput:
        """Prototype layer + last layer on add-on features (fp32, outside autocast)."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            distances = squared_l2_distances(features, self.prototypes)
            min_distances = min_distances_at_argmin(features, self.prototypes, distances)
            logits = self.last_layer(log_similarity(min_distances))
        return ProtoOutput(logits, min_distances, distances, features)

    def logits_from_min_distances(self, min_distances: torch.Tensor) -> torch.Tensor:
        """Logits from min distances alone (B, m) → (B, K): h(log similarity)."""
        return self.last_layer(log_similarity(min_distances))

    def align_to(self, teacher: nn.Module, *, copy_head: bool) -> None:
        """Distillation: with ``copy_head``, take the teacher's last layer and class identity."""
        if copy_head:
            with torch.no_grad():
                self.last_layer.weight.copy_(teacher.last_layer.weight)
                self.class_identity.copy_(teacher.class_identity)

    @staticmethod
    def structure_from(tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor | None]:
        """Constructor arguments that fix the shape, from a saved state dict."""
        return {"class_identity": (tensors or {}).get("class_identity")}

    # -- pruning ------------------------------------------------------------------------------
    def merge_prototypes(self, groups: list[list[int]]) -> ProtoPNet:
        """A new model whose prototype ``i`` is ``groups[i]`` merged (ProtoPShare, Rymarczyk et al. 2021).

        ``groups`` lists disjoint prototype indices of this model; prototypes in no group are
        removed. For group ``[s, a, b, …]`` the new prototype keeps the *survivor* ``s``'s vector
        (D,), its last-layer column is the sum ``h[:, s] + h[:, a] + …`` (K,) and its class
        identity the union (elementwise max) of the members' rows (K,). Singleton groups select
        prototypes unchanged (k-NN pruning). Shapes of the result: prototype_vectors
        (len(groups), D, 1, 1), class_identity (len(groups), K), last_layer Linear(len(groups)→K).

        When every member of a group has the same min distance to every input, the merged model's
        logits equal this model's (the summed column sees one similarity instead of several).
        Backbone and add-on are deep copies: this model is left untouched, and an optimizer
        bound to it does not train the result (re-create optimizers on the returned model).
        """
        import copy

        m = self.num_prototypes
        flat = [int(j) for g in groups for j in g]
        if not groups or any(not g for g in groups):
            raise ValueError("merge_prototypes needs non-empty groups")
        if len(set(flat)) != len(flat) or min(flat) < 0 or max(flat) >= m:
            raise ValueError(f"groups must be disjoint indices in [0, {m}), got {groups}")
        survivors = torch.tensor([int(g[0]) for g in groups], device=self.prototype_vectors.device)
        assign = torch.zeros(len(groups), m, dtype=self.last_layer.weight.dtype, device=survivors.device)
        for i, g in enumerate(groups):
            assign[i, list(g)] = 1.0  # (m', m): row i selects the members of group i
        with torch.no_grad():
            vectors = self.prototype_vectors[survivors].clone()  # (m', D, 1, 1)
            weight = self.last_layer.weight @ assign.t()  # (K, m) @ (m, m') -> (K, m')
            identity = (assign @ self.class_identity.to(assign.dtype) > 0).to(self.class_identity.dtype)  # (m', K)
        new = copy.deepcopy(self)
        new.prototype_vectors = nn.Parameter(vectors, requires_grad=self.prototype_vectors.requires_grad)
        new.class_identity = identity
        new.last_layer = nn.Linear(len(groups), self.config.num_classes, bias=False).to(weight.device)
        with torch.no_grad():
            new.last_layer.weight.copy_(weight)
        new.last_layer.weight.requires_grad_(self.last_layer.weight.requires_grad)
        new.train(self.training)
        return new

    # -- parameter groups (training stages select from these) ---------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "backbone": list(self.backbone.parameters()),
            "add_on": list(self.add_on.parameters()),
            "prototypes": [self.prototype_vectors],
            "last_layer": list(self.last_layer.parameters()),
        }
