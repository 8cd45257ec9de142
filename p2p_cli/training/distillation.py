"""The distillation objective: Proto2Proto's transfer terms or a KD baseline, with the task loss.

Proto2Proto (Keswani et al., CVPR 2022, Eq. 6): ``L = L_ppnet + λ_global·L_global + λ_ppc·L_ppc``.
Stage 1 (warm epochs) optimises the transfer terms only, stage 2 (joint) adds ``L_ppnet``; push
and last layer then run as for a teacher. The KD baselines (FitNets hint, RKD, Hinton KD) plug
in through the same method registry (:mod:`p2p_cli.losses.registry`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from p2p_cli.io.config import TrainConfig
from p2p_cli.losses.registry import DistillMethod
from p2p_cli.models.inference import frozen_inference_copy
from p2p_cli.models.protopnet import ProtoOutput, ProtoPNet, PrototypeNetwork, squared_l2_distances
from p2p_cli.runtime.device import Runtime
from p2p_cli.training.objectives import task_terms


def method_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys the loss registry reads (``kd_weight`` weights every KD baseline)."""
    return {"tau_train": cfg.tau_train, "fidelity": cfg.fidelity, "lambda_global": cfg.lambda_global,
            "lambda_ppc": cfg.lambda_ppc, "lambda_hint": cfg.kd_weight, "lambda_rkd": cfg.kd_weight,
            "lambda_kd": cfg.kd_weight, "kd_temperature": cfg.kd_temperature}


class DistillObjective:
    """Stage 1 (``warm``): the transfer terms only; stage 2: ``L_ppnet`` (unless
    ``ppnet_loss`` is off) + the transfer terms (Proto2Proto Eq. 6).

    The teacher runs under ``torch.inference_mode()`` in eval mode: no graph, no gradients, from
    a private copy with its BatchNorms folded and its backbone weights in the autocast precision
    (:func:`~p2p_cli.models.inference.frozen_inference_copy`; ``teacher`` itself is untouched). Both
    models' outputs reach the method as dicts of logits (B, K), min distances (B, m), distance
    maps (B, m, H, W), features (B, D, H, W) and prototypes (m, D).
    """

    def __init__(self, cfg: TrainConfig, teacher: PrototypeNetwork, method: DistillMethod, rt: Runtime,
                 d_student: int) -> None:
        self.cfg, self.teacher, self.method, self.rt = cfg, teacher, method, rt
        self.fast_teacher = frozen_inference_copy(teacher, amp_dtype=rt.amp_dtype, channels_last=rt.channels_last)
        self.settings = method_settings(cfg)
        self.teacher_keys = method.teacher_keys(self.settings)
        self.modules = method.make_modules(d_student, teacher.prototype_depth)

    def extra_modules(self) -> dict[str, nn.Module]:
        return dict(self.modules.items())

    def teacher_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's outputs the method reads (``method.teacher_keys``) for images (B, 3, S, S).

        A ProtoPNet teacher whose distances are the last thing read (Proto2Proto: features,
        distance maps, prototypes) stops there: its min distances at the arg-min — a (B, D, m)
        gather — and its logits are not computed."""
        prototypes = self.teacher.prototypes.detach()
        with torch.inference_mode(), self.rt.autocast():
            if self.teacher_keys <= {"features", "distances", "prototypes"} and isinstance(self.teacher, ProtoPNet):
                feats = self.fast_teacher.features(images)
                out = {"features": feats, "prototypes": prototypes}
                if "distances" in self.teacher_keys:
                    with torch.autocast(device_type=feats.device.type, enabled=False):
                        out["distances"] = squared_l2_distances(feats, self.fast_teacher.prototypes)
                return out
            out = self.fast_teacher(images)
        return {**out._asdict(), "prototypes": prototypes}

    def loss(self, model: PrototypeNetwork, out: ProtoOutput, images: torch.Tensor, labels: torch.Tensor,
             stage: str) -> dict[str, torch.Tensor]:
        teacher = self.teacher_outputs(images)
        student = {**out._asdict(), "prototypes": model.prototypes}
        terms = self.method.compute(teacher, student, self.settings)
        total = terms["transfer"]
        if stage != "warm" and self.cfg.ppnet_loss:
            ppnet = task_terms(model, out, labels, self.cfg)
            total = total + ppnet.pop("total")
            terms.update(ppnet)
        terms["total"] = total
        return terms
