"""Proto2Proto interpretability-transfer losses (Keswani et al., CVPR 2022, §3, Eq. 1-6).

Plain-tensor functions; the teacher is frozen, so every teacher tensor is detached here and
gradients reach only the student. Shapes:

- distances (B, m, H, W): squared-L2 distance maps of one model;
- features ω (B, D, H, W): add-on outputs;
- prototypes (m, D) (a (m, D, 1, 1) parameter is flattened here).

Two fidelity modes (``--fidelity``):

- ``"paper"`` (default): Eq. 1-5 as written — the active-patch mask comes from the
  **teacher's** distances, ``L_ppc`` is Eq. 4's mean over images of the unsquared L2 norm of the
  masked difference, and ``L_global = mean_j ‖p_j^T − p_j^S‖₂``.
- ``"reference"``: the public code's behaviour — the mask comes from the **student's**
  distances, ``L_ppc = Σ M·(ω^T − ω^S)² / (2ΣM + 1)`` and ``L_global = mean |p^S − p^T|``
  element-wise (its ``PairwiseDistance`` runs over the size-1 last axis of the (m, D, 1, 1)
  prototypes; the code's ε = 1e-6 inside the absolute value is left out, a ≤ 1e-6 difference).

Teacher tensors produced under ``torch.inference_mode()`` are accepted: see :func:`ppc_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from p2p_cli.errors import P2PError, did_you_mean

__all__ = [
    "FIDELITIES",
    "check_fidelity",
    "active_patch_mask",
    "ppc_loss",
    "global_loss",
    "transfer_losses",
]

FIDELITIES = ("paper", "reference")


def check_fidelity(fidelity: str) -> str:
    """Return ``fidelity`` if valid, else raise a one-line :class:`P2PError`."""
    if fidelity not in FIDELITIES:
        raise P2PError(
            f"unknown fidelity '{fidelity}'; choose one of {', '.join(FIDELITIES)}"
            + did_you_mean(str(fidelity), FIDELITIES)
        )
    return fidelity


def active_patch_mask(distances: Tensor, tau: float) -> Tensor:
    """Binary mask of active patches, Eq. 1-3 (the M^T of Eq. 3 when fed teacher distances).

    ``distances`` (B, m, H, W) → mask (B, H, W), same float dtype, no gradient.
    Patch (h, w) of image b is active iff some prototype j has its arg-min over the H×W
    grid at (h, w) and that minimum distance is ≤ τ (Eq. 1, inclusive). ``tau=math.inf``
    marks every prototype's arg-min location.

    Ties: each prototype contributes exactly one location, the *first* arg-min in row-major
    (h, w) order (``torch.argmin`` convention) — the same ℓ the metrics (AAP/AJS/PMS) use.
    The reference code instead marks every tied location and uses a strict ``d < τ``; the two
    differ only on exact ties / exact equality with τ.
    """
    if distances.dim() != 4:
        raise P2PError(f"distances must be (B, m, H, W), got shape {tuple(distances.shape)}")
    with torch.no_grad():
        b, m, h, w = distances.shape
        flat = distances.detach().reshape(b, m, h * w)
        loc = flat.argmin(dim=2)  # (B, m), first minimum
        dmin = flat.gather(2, loc.unsqueeze(2)).squeeze(2)  # (B, m)
        dtype = flat.dtype if flat.dtype.is_floating_point else torch.float32
        active = (dmin <= tau).to(dtype)
        mask = torch.zeros(b, h * w, dtype=dtype, device=flat.device)
        mask.scatter_reduce_(1, loc, active, reduce="amax")
        return mask.reshape(b, h, w)


def _usable(t: Tensor) -> Tensor:
    """Detached tensor that autograd may save: inference tensors are cloned to normal ones."""
    t = t.detach()
    return t.clone() if t.is_inference() else t


def ppc_loss(features_t: Tensor, features_s: Tensor, mask: Tensor, fidelity: str = "paper",
             batch_sum: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Patch-Prototype Correspondence loss L_ppc (Proto2Proto Eq. 4).

    features_t, features_s (B, D, H, W); mask (B, H, W) of 0/1 → scalar.

    - ``"paper"`` (Eq. 4 as written): the mean over the batch's images of the L2 norm (not
      squared) of the masked difference,
      ``L_ppc = (1/B) Σ_b ‖M(x_b) · [ω^T(x_b) − ω^S(x_b)]‖₂``, the norm over all D·H·W entries
      of image b (the mask broadcast over D). An image with no active patch contributes 0; at a
      zero difference ``torch.linalg.vector_norm`` gives the subgradient 0 (finite, not NaN).
    - ``"reference"`` (the public code's ``featureLoss_mask``):
      ``L_ppc = Σ_{b,c,h,w} M·(ω^T − ω^S)² / (2·Σ_{b,h,w} M + 1)`` over the whole batch.

    Gradient flows only into ``features_s`` (teacher features and mask are detached); it is
    exactly 0 wherever M = 0. Accumulates in float32 even under bf16/fp16 autocast.

    Data parallelism: the reference form's normaliser couples the images of a batch. Where this
    process holds ``B`` of the global batch's ``N`` images, ``batch_sum`` sums a tensor over all
    processes: the denominator is then the global batch's, and the result is scaled by ``N/B``
    so that the processes' losses weighted by ``B/N`` (what averaging their gradients does, see
    :func:`~p2p_cli.runtime.distributed.loss_weight`) add up to the one-process ``L_ppc``. The
    paper form is a per-image mean, which that weighting already makes the global batch's mean.

    Inference tensors: ``ω^T − ω^S`` saves neither operand for backward, so an inference-mode
    ``features_t`` works as is; the product with ``M`` *does* save ``M``, so a mask computed
    inside ``torch.inference_mode()`` is cloned to a normal tensor first (cheap: B·H·W).
    """
    check_fidelity(fidelity)
    if features_t.shape != features_s.shape:
        raise P2PError(
            f"teacher and student add-on features differ in shape: teacher {tuple(features_t.shape)}, "
            f"student {tuple(features_s.shape)} (prototype depth D and grid H×W must match)"
        )
    b, _, h, w = features_s.shape
    if tuple(mask.shape) != (b, h, w):
        raise P2PError(f"active-patch mask must be (B, H, W) = {(b, h, w)}, got {tuple(mask.shape)}")
    m = _usable(mask).float().unsqueeze(1)  # (B, 1, H, W)
    diff = features_t.detach().float() - features_s.float()  # (B, D, H, W)
    if fidelity == "paper":
        per_image = torch.linalg.vector_norm((diff * m).flatten(1), ord=2, dim=1)  # (B,)
        return per_image.mean()
    num = (diff.square() * m).sum()
    if batch_sum is None:
        return num / (2.0 * m.sum() + 1.0)
    totals = batch_sum(torch.stack([m.sum().detach(), torch.tensor(float(b), device=m.device)]))  # Σ M, N
    return num * (totals[1] / b) / (2.0 * totals[0] + 1.0)


def _flat_prototypes(p: Tensor) -> Tensor:
    return p.reshape(p.shape[0], -1)


def global_loss(prototypes_t: Tensor, prototypes_s: Tensor, fidelity: str = "paper") -> Tensor:
    """Global Explanation loss, Eq. 5 (index-aligned prototypes).

    prototypes_t, prototypes_s (m, D) or (m, D, 1, 1) → scalar; gradient only into the student.

    - ``"paper"``: ``mean_j ‖p_j^T − p_j^S‖₂`` (Euclidean, as the paper's experiments use).
      At a zero difference the norm is not differentiable; ``torch.linalg.vector_norm``'s
      backward returns the subgradient 0 there (rows with ‖·‖ = 0), so the gradient stays
      finite — a naive ``sqrt(sum(d²))`` would give NaN (tested).
    - ``"reference"``: ``mean over (j, d) of |p^S_jd − p^T_jd|`` (the public code).
    """
    check_fidelity(fidelity)
    p_t = _flat_prototypes(prototypes_t.detach())
    p_s = _flat_prototypes(prototypes_s)
    if p_t.shape != p_s.shape:
        raise P2PError(
            f"teacher and student prototypes differ: teacher m×D = {p_t.shape[0]}×{p_t.shape[1]}, "
            f"student m×D = {p_s.shape[0]}×{p_s.shape[1]} (Proto2Proto needs the same m and D)"
        )
    diff = p_s - p_t
    if fidelity == "paper":
        return torch.linalg.vector_norm(diff, ord=2, dim=1).mean()
    return diff.abs().mean()


def transfer_losses(
    distances_t: Tensor | None,
    features_t: Tensor,
    prototypes_t: Tensor,
    distances_s: Tensor | None,
    features_s: Tensor,
    prototypes_s: Tensor,
    *,
    tau_train: float = 100.0,
    fidelity: str = "paper",
    lambda_global: float = 10.0,
    lambda_ppc: float = 10.0,
    batch_sum: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """Proto2Proto transfer terms of Eq. 6 (everything but ``L_model``).

    The mask is ``active_patch_mask(distances_t, tau_train)`` in ``"paper"`` fidelity (Eq. 3)
    and ``active_patch_mask(distances_s, tau_train)`` in ``"reference"`` fidelity; only the
    distances that fidelity uses are required (the other may be None).

    ``batch_sum``: see :func:`ppc_loss` (data parallelism). Returns unweighted ``"ppc"`` and ``"global"`` and
    ``"total_transfer" = λ_global·global + λ_ppc·ppc``.
    """
    check_fidelity(fidelity)
    source = distances_t if fidelity == "paper" else distances_s
    if source is None:
        who = "teacher" if fidelity == "paper" else "student"
        raise ValueError(f"fidelity '{fidelity}' needs the {who}'s distance maps")
    if source.shape[-2:] != features_s.shape[-2:]:
        raise P2PError(
            f"distance grid {tuple(source.shape[-2:])} does not match feature grid {tuple(features_s.shape[-2:])}"
        )
    mask = active_patch_mask(source, tau_train)
    ppc = ppc_loss(features_t, features_s, mask, fidelity, batch_sum)
    glob = global_loss(prototypes_t, prototypes_s, fidelity)
    total = lambda_global * glob + lambda_ppc * ppc
    return {"ppc": ppc, "global": glob, "total_transfer": total}
