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
from p2p_cli.runtime.distributed import all_reduce_sum
from p2p_cli.training.objectives import task_terms


def method_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The config keys the loss registry reads (``kd_weight`` weights every KD baseline)."""
    return {"tau_train": cfg.tau_train, "fidelity": cfg.fidelity, "lambda_global": cfg.lambda_global,
            "lambda_ppc": cfg.lambda_ppc, "lambda_hint": cfg.kd_weight, "lambda_rkd": cfg.kd_weight,
            "lambda_kd": cfg.kd_weight, "kd_temperature": cfg.kd_temperature}


def backbone_channels(model: PrototypeNetwork) -> int:
    """Channels C of the backbone's output: the input width of the add-on's first 1×1 conv."""
    conv = next(m for m in model.add_on.modules() if isinstance(m, nn.Conv2d))
    return int(conv.in_channels)


class DistillObjective:
    """Stage 1 (``warm``): the transfer terms only; stage 2: ``L_ppnet`` (unless
    ``ppnet_loss`` is off) + the transfer terms (Proto2Proto Eq. 6).

    ``trains_head_jointly``: under ``fidelity: reference`` stage 2 also trains the student's
    last layer at ``lr_last_layer`` (decayed with the joint schedule), as the public code's
    ``joint`` optimizer does; in ``paper`` fidelity the last layer trains only in its own stage.

    The teacher runs under ``torch.inference_mode()`` in eval mode: no graph, no gradients, from
    a private copy with its BatchNorms folded and its backbone weights in the autocast precision
    (:func:`~p2p_cli.models.inference.frozen_inference_copy`; ``teacher`` itself is untouched). Both
    models' outputs reach the method as dicts of logits (B, K), min distances (B, m), distance
    maps (B, m, H, W), features (B, D, H, W) and prototypes (m, D); a method that reads
    ``"backbone"`` (the FitNets hint) gets the backbone outputs (B, C, H, W) instead — the
    teacher's from its backbone alone, the student's captured by a forward hook on
    ``student.backbone`` during the trainer's one forward pass.
    """

    def __init__(self, cfg: TrainConfig, teacher: PrototypeNetwork, method: DistillMethod, rt: Runtime,
                 student: PrototypeNetwork) -> None:
        self.cfg, self.teacher, self.method, self.rt = cfg, teacher, method, rt
        self.fast_teacher = frozen_inference_copy(teacher, amp_dtype=rt.amp_dtype, channels_last=rt.channels_last)
        self.settings = method_settings(cfg)
        self.teacher_keys = method.teacher_keys(self.settings)
        # the Proto2Proto code's joint optimizer also trains the student's last layer (lrLastLayer)
        self.trains_head_jointly = cfg.fidelity == "reference"
        self.uses_backbone = "backbone" in method.student_keys(self.settings)
        if method.module_widths == "backbone_channels":
            widths = backbone_channels(student), backbone_channels(teacher)
        else:
            widths = student.prototype_depth, teacher.prototype_depth
        self.modules = method.make_modules(*widths)
        if rt.distributed:  # batch-coupled terms (L_ppc's normaliser) sum over the global batch
            self.settings["batch_sum"] = lambda t: all_reduce_sum(t.clone(), rt)
        self._student_backbone: torch.Tensor | None = None
        if self.uses_backbone:
            student.backbone.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._student_backbone = output

    def extra_modules(self) -> dict[str, nn.Module]:
        return dict(self.modules.items())

    def teacher_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The teacher's outputs the method reads (``method.teacher_keys``) for images (B, 3, S, S).

        A ProtoPNet teacher whose distances are the last thing read (Proto2Proto: features,
        distance maps, prototypes) stops there: its min distances at the arg-min — a (B, D, m)
        gather — and its logits are not computed."""
        prototypes = self.teacher.prototypes.detach()
        with torch.inference_mode(), self.rt.autocast():
            if "backbone" in self.teacher_keys:  # nothing past the backbone is read
                return {"backbone": self.fast_teacher.backbone(images)}
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
        student: dict[str, Any] = {**out._asdict(), "prototypes": model.prototypes}
        if self.uses_backbone:
            if self._student_backbone is None:
                raise RuntimeError("the student's backbone output was not captured")  # a bug
            student["backbone"], self._student_backbone = self._student_backbone, None
        terms = self.method.compute(teacher, student, self.settings)
        total = terms["transfer"]
        if stage != "warm" and self.cfg.ppnet_loss:
            ppnet = task_terms(model, out, labels, self.cfg)
            total = total + ppnet.pop("total")
            terms.update(ppnet)
        terms["total"] = total
        return terms
