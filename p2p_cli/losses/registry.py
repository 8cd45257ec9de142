"""Registry of distillation methods (``--method``), in the spirit of torchdistill's loss registry.

A *method* says which model outputs it needs and turns them into transfer-loss terms::

    method = get_method("proto2proto")          # a fresh instance per run
    extra = method.make_modules(d_student, d_teacher)   # nn.ModuleDict; train + save it
    terms = method.compute(teacher_out, student_out, cfg)
    loss = ppnet_total + terms["transfer"]       # the trainer adds L_ppnet (Eq. 6)

``teacher_out`` / ``student_out`` are dicts with (a subset of) the keys ``"logits"`` (B, K),
``"min_distances"`` (B, m), ``"distances"`` (B, m, H, W), ``"features"`` (B, D, H, W) and
``"prototypes"`` (m, D) or (m, D, 1, 1), and ``"backbone"`` (B, C, H, W), the backbone's output
before the add-on (read by ``hint`` only). ``teacher_keys`` / ``student_keys`` list what a
method reads (depending on ``cfg`` for Proto2Proto's fidelity); ``needs_teacher`` is False
only for ``none``, so the trainer can skip the teacher's forward pass.

``compute`` returns the *unweighted* terms under their own names plus ``"transfer"``, the
weighted sum to add to the loss. ``cfg`` is a mapping or an object with attributes; missing
keys take these defaults:

========================  =======  =====================================================
key                       default  used by
========================  =======  =====================================================
``tau_train``             100.0    proto2proto (active-patch threshold τ_train)
``fidelity``              paper    proto2proto (``paper`` | ``reference``)
``lambda_global``         10.0     proto2proto
``lambda_ppc``            10.0     proto2proto
``lambda_hint``           1.0      hint
``lambda_rkd``            1.0      rkd (multiplies ``w_distance·D + w_angle·A``)
``rkd_w_distance``        25.0     rkd
``rkd_w_angle``           50.0     rkd
``lambda_kd``             1.0      kd
``kd_temperature``        4.0      kd
========================  =======  =====================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.losses.kd import HintRegressor, hint_loss, kd_loss, rkd_angle_loss, rkd_distance_loss
from p2p_cli.losses.proto2proto import check_fidelity, transfer_losses

__all__ = [
    "DistillMethod",
    "register_method",
    "get_method",
    "list_methods",
    "cfg_get",
]

_METHODS: dict[str, Callable[[], DistillMethod]] = {}

M = TypeVar("M", bound=type)


def cfg_get(cfg: Any, key: str, default: Any) -> Any:
    """``cfg[key]`` for a mapping, ``cfg.key`` for an object, ``default`` if absent or None."""
    if cfg is None:
        return default
    value = cfg.get(key, default) if isinstance(cfg, Mapping) else getattr(cfg, key, default)
    return default if value is None else value


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`DistillMethod` subclass under ``name``."""

    def deco(cls: M) -> M:
        if name in _METHODS:
            raise ValueError(f"distillation method '{name}' is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> DistillMethod:
    """A fresh instance of the method ``name``; unknown names raise a one-line P2PError."""
    try:
        factory = _METHODS[name]
    except KeyError:
        raise P2PError(
            f"unknown distillation method '{name}'; available: {', '.join(list_methods())}"
            + did_you_mean(name, _METHODS)
        ) from None
    return factory()


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


class DistillMethod:
    """Base class: no extra modules, no teacher, zero transfer loss."""

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    # what make_modules' widths are: the add-on's prototype depth D, or the backbone's channels C
    module_widths: ClassVar[str] = "prototype_depth"

    def __init__(self) -> None:
        self.modules: nn.ModuleDict = nn.ModuleDict()

    def teacher_keys(self, cfg: Any = None) -> frozenset[str]:
        """Teacher outputs that :meth:`compute` reads."""
        return frozenset()

    def student_keys(self, cfg: Any = None) -> frozenset[str]:
        """Student outputs that :meth:`compute` reads."""
        return frozenset()

    def make_modules(self, d_student: int, d_teacher: int) -> nn.ModuleDict:
        """Extra trainable modules (optimise and checkpoint them with the student); the widths are
        the models' ``module_widths`` (prototype depth D, or backbone channels C)."""
        return self.modules

    def compute(
        self, teacher: Mapping[str, Tensor], student: Mapping[str, Tensor], cfg: Any = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    @staticmethod
    def _zero(student: Mapping[str, Tensor]) -> Tensor:
        ref = next(iter(student.values()), None) if student else None
        return torch.zeros((), device=ref.device if ref is not None else None)


@register_method("none")
class NoDistillation(DistillMethod):
    """Baseline student: ProtoPNet loss only; ``transfer`` is 0."""

    needs_teacher = False

    def compute(
        self, teacher: Mapping[str, Tensor], student: Mapping[str, Tensor], cfg: Any = None
    ) -> dict[str, Tensor]:
        return {"transfer": self._zero(student)}


@register_method("proto2proto")
class Proto2Proto(DistillMethod):
    """Eq. 6 transfer terms: ``λ_global·L_global + λ_ppc·L_ppc`` (needs same m, D and H×W)."""

    def teacher_keys(self, cfg: Any = None) -> frozenset[str]:
        fidelity = check_fidelity(cfg_get(cfg, "fidelity", "paper"))
        keys = {"features", "prototypes"}
        return frozenset(keys | {"distances"} if fidelity == "paper" else keys)

    def student_keys(self, cfg: Any = None) -> frozenset[str]:
        fidelity = check_fidelity(cfg_get(cfg, "fidelity", "paper"))
        keys = {"features", "prototypes"}
        return frozenset(keys | {"distances"} if fidelity == "reference" else keys)

    def make_modules(self, d_student: int, d_teacher: int) -> nn.ModuleDict:
        if d_student != d_teacher:
            raise P2PError(
                f"Proto2Proto needs the same prototype depth D for teacher and student: "
                f"teacher D = {d_teacher}, student D = {d_student}"
            )
        return self.modules

    def compute(
        self, teacher: Mapping[str, Tensor], student: Mapping[str, Tensor], cfg: Any = None
    ) -> dict[str, Tensor]:
        out = transfer_losses(
            teacher.get("distances"),
            teacher["features"],
            teacher["prototypes"],
            student.get("distances"),
            student["features"],
            student["prototypes"],
            tau_train=float(cfg_get(cfg, "tau_train", 100.0)),
            fidelity=cfg_get(cfg, "fidelity", "paper"),
            lambda_global=float(cfg_get(cfg, "lambda_global", 10.0)),
            lambda_ppc=float(cfg_get(cfg, "lambda_ppc", 10.0)),
            batch_sum=cfg_get(cfg, "batch_sum", None),
        )
        return {"ppc": out["ppc"], "global": out["global"], "transfer": out["total_transfer"]}


@register_method("hint")
class Hint(DistillMethod):
    """FitNets (Proto2Proto Table 5): ``λ_hint · MSE(r(v^S), u^T)`` on the backbone outputs, with
    a trainable regressor r = Conv1×1(C_s → C_t) + ReLU (the Proto2Proto code's adapter)."""

    module_widths = "backbone_channels"

    def teacher_keys(self, cfg: Any = None) -> frozenset[str]:
        return frozenset({"backbone"})

    def student_keys(self, cfg: Any = None) -> frozenset[str]:
        return frozenset({"backbone"})

    def make_modules(self, d_student: int, d_teacher: int) -> nn.ModuleDict:
        self.modules = nn.ModuleDict({"hint_regressor": HintRegressor(d_student, d_teacher)})
        return self.modules

    def compute(
        self, teacher: Mapping[str, Tensor], student: Mapping[str, Tensor], cfg: Any = None
    ) -> dict[str, Tensor]:
        if "hint_regressor" not in self.modules:
            raise RuntimeError("call make_modules(c_student, c_teacher) before compute() for 'hint'")
        regressed = self.modules["hint_regressor"](student["backbone"])
        hint = hint_loss(regressed, teacher["backbone"])
        return {"hint": hint, "transfer": float(cfg_get(cfg, "lambda_hint", 1.0)) * hint}


@register_method("rkd")
class RKD(DistillMethod):
    """RKD on the spatially averaged add-on features ω → (B, D) embeddings of each model.

    Average pooling keeps every patch in the embedding (like the global pooling before a
    CNN's classifier, where Park et al. apply RKD); D may differ between the two models.
    """

    def teacher_keys(self, cfg: Any = None) -> frozenset[str]:
        return frozenset({"features"})

    def student_keys(self, cfg: Any = None) -> frozenset[str]:
        return frozenset({"features"})

    def compute(
        self, teacher: Mapping[str, Tensor], student: Mapping[str, Tensor], cfg: Any = None
    ) -> dict[str, Tensor]:
        emb_s = student["features"].mean(dim=(2, 3))
        emb_t = teacher["features"].detach().mean(dim=(2, 3))
        dist = rkd_distance_loss(emb_s, emb_t)
        angle = rkd_angle_loss(emb_s, emb_t)
        total = float(cfg_get(cfg, "rkd_w_distance", 25.0)) * dist + float(cfg_get(cfg, "rkd_w_angle", 50.0)) * angle
        return {
            "rkd_distance": dist,
            "rkd_angle": angle,
            "transfer": float(cfg_get(cfg, "lambda_rkd", 1.0)) * total,
        }


@register_method("kd")
class LogitKD(DistillMethod):
    """Hinton KD: ``λ_kd · T² · KL(softmax(z^T/T) ‖ softmax(z^S/T))`` on the logits."""

    def teacher_keys(self, cfg: Any = None) -> frozenset[str]:
        return frozenset({"logits"})

    def student_keys(self, cfg: Any = None) -> frozenset[str]:
        return frozenset({"logits"})

    def compute(
        self, teacher: Mapping[str, Tensor], student: Mapping[str, Tensor], cfg: Any = None
    ) -> dict[str, Tensor]:
        kd = kd_loss(student["logits"], teacher["logits"], float(cfg_get(cfg, "kd_temperature", 4.0)))
        return {"kd": kd, "transfer": float(cfg_get(cfg, "lambda_kd", 1.0)) * kd}
