"""Numerical guards of training: stop at the first non-finite number, warn when the loss explodes.

A NaN or an infinity in a loss term, in the gradient norm or in a parameter never heals: every
later step inherits it, and a run saved from it predicts one class for every image. The trainer
therefore checks, per batch, every loss term (before the backward pass) and the global gradient
norm ``‖g‖₂ = sqrt(Σ_p ‖∇_p L‖₂²)`` (before the optimizer step), and per step every parameter
(before a snapshot or the final model is written). The first failure is a one-line
:class:`NonFiniteError` naming the step and the term; the last snapshot on disk is from the last
good step. A finite loss that grows to :data:`DIVERGENCE_FACTOR` times the run's first batch loss
is a one-line warning (:meth:`DivergenceWatch.update`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from p2p_cli.errors import P2PError, P2PWarning

DIVERGENCE_FACTOR = 1e3
"""Warn when a total loss exceeds this many times max(|the run's first batch loss|, 1)."""


class NonFiniteError(P2PError):
    """Training produced a NaN or an infinity; nothing after the last good snapshot is kept."""


def check_terms(terms: dict[str, torch.Tensor], where: str) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite loss term (scalars) of ``terms``."""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
    if bool(torch.isfinite(values).all()):
        return
    for name, value in zip(terms, values.tolist(), strict=True):
        if not math.isfinite(value):
            raise NonFiniteError(f"{where}: loss term '{name}' is {value}; training stopped, no model written "
                                 "(lower the learning rates or the loss weights)")


def grad_norm(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients of ``params`` (a 0-d tensor; 0 when none has a gradient)."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def check_grad_norm(params: Iterable[nn.Parameter], where: str) -> None:
    """Raise :class:`NonFiniteError` when the global gradient norm of ``params`` is not finite."""
    norm = float(grad_norm(params))
    if not math.isfinite(norm):
        raise NonFiniteError(f"{where}: gradient norm is {norm}; training stopped, no model written "
                             "(lower the learning rates)")


def check_parameters(modules: dict[str, nn.Module], where: str) -> None:
    """Raise :class:`NonFiniteError` naming the first parameter or buffer of ``modules`` that holds
    a NaN or an infinity (floating-point tensors only)."""
    for prefix, module in modules.items():
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
                raise NonFiniteError(f"{where}: parameter '{prefix}{name}' holds NaN/inf; training stopped, "
                                     "no model written (lower the learning rates)")


class DivergenceWatch:
    """Warns once (a :class:`~p2p_cli.errors.P2PWarning`) when a total loss (a batch's, or a
    last-layer epoch's mean) grows past :data:`DIVERGENCE_FACTOR` × max(|the first one seen|, 1)."""

    def __init__(self, factor: float = DIVERGENCE_FACTOR) -> None:
        self.factor = factor
        self.first: float | None = None
        self.warned = False

    def update(self, loss: float, where: str) -> bool:
        """Record a loss (the first one is the reference); returns True when it warned."""
        if self.first is None:
            self.first = loss
            return False
        limit = self.factor * max(abs(self.first), 1.0)
        if self.warned or abs(loss) <= limit:
            return False
        self.warned = True
        warnings.warn(P2PWarning(f"{where}: the loss is diverging ({loss:.3g}, at the start {self.first:.3g}); "
                                 "lower the learning rates"), stacklevel=2)
        return True
