"""DistributedDataParallel wrappers for the trainer's stages (PyTorch DDP: bucketed gradient
all-reduce overlapped with the backward pass)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.distributed import TrainedModules, wrap_ddp


class StageReplicas:
    """The module each training stage's forward pass runs (see :meth:`get`)."""

    def __init__(self, model: nn.Module, extra: nn.Module, objective: Any, rt: Runtime) -> None:
        self.model, self.extra, self.objective, self.rt = model, extra, objective, rt
        self._ddp: nn.Module | None = None
        self._stage = ""

    def reset(self) -> None:
        """Forget the wrapper: the trained parameter set changed (push, last layer, pruning)."""
        self._ddp = None

    def get(self, stage: str, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
        """What the training forward pass runs: the model, or under torch.distributed the model
        and the objective's extra modules wrapped in DistributedDataParallel.

        DDP registers the parameters that require gradients when it is built and then waits, every
        step, for a gradient of each. So the wrapper is rebuilt whenever the trained set changes
        (at a stage change, and after a push, a last-layer or a pruning step: a pruned tree has new
        parameters), and it registers only what the stage's loss reaches: a trained group the loss
        never touches (a FitNets hint in the warm stage reaches neither add-on nor prototypes) gets no
        gradient in one process either. That set is found once per wrapper with
        ``torch.autograd.grad`` on the first batch (``images`` (B, 3, S, S), ``labels`` (B,)), in
        eval mode so that BatchNorm statistics do not move. Re-wrapping costs one broadcast of the
        parameters per stage; the alternative, one wrapper over every parameter with
        ``find_unused_parameters=True``, searches the autograd graph after every forward pass
        (docs/scaling.md compares the two).
        """
        if not self.rt.distributed:
            return self.model
        if self._ddp is None or self._stage != stage:
            self._ddp = None  # drop the old wrapper (and its gradient hooks) first
            unreached = self.unreached(stage, images, labels)
            for p in unreached:
                p.requires_grad_(False)
            try:
                self._ddp = wrap_ddp(TrainedModules(self.model, self.extra), self.rt)
            finally:
                for p in unreached:
                    p.requires_grad_(True)
            self._stage = stage
        return self._ddp

    def unreached(self, stage: str, images: torch.Tensor, labels: torch.Tensor) -> list[nn.Parameter]:
        """The trainable parameters the loss of ``stage`` does not depend on (one probe batch)."""
        params = [p for p in list(self.model.parameters()) + list(self.extra.parameters()) if p.requires_grad]
        modes = [m.training for m in (self.model, self.extra)]
        self.model.eval()
        self.extra.eval()
        try:
            with self.rt.autocast():
                out = self.model(images)
            total = self.objective.loss(self.model, out, images, labels, stage)["total"]
            if not total.requires_grad:
                return params
            grads = torch.autograd.grad(total, params, allow_unused=True)
        finally:
            self.model.train(modes[0])
            self.extra.train(modes[1])
        return [p for p, g in zip(params, grads, strict=True) if g is None]

