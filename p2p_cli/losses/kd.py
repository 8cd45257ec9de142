"""Classic knowledge-distillation baselines for the paper's Table 5 (``--method``).

- FitNets hint (Romero et al., ICLR 2015; Proto2Proto Table 5): a regressor (1×1 conv + ReLU)
  maps the student's *backbone* output to the teacher's backbone channels, MSE against the
  teacher's backbone output — the adapter ``stu_feature_adap`` of the Proto2Proto code.
- RKD (Park et al., CVPR 2019): distance-wise + angle-wise relational losses on per-image
  embeddings of a batch.
- Logit KD (Hinton et al., 2015): KL between temperature-softened distributions.

Teacher inputs are detached; gradients reach only the student (and the regressor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p2p_cli.errors import P2PError

__all__ = ["HintRegressor", "hint_loss", "rkd_loss", "rkd_distance_loss", "rkd_angle_loss", "kd_loss"]


class HintRegressor(nn.Module):
    """FitNets regressor r: Conv1×1 ``C_s → C_t`` (with bias) followed by a ReLU.

    Maps the student's backbone output v (B, C_s, H, W) to (B, C_t, H, W), the shape of the
    teacher's backbone output u (the hint). The ReLU is the hint layer's own non-linearity (a
    ResNet/VGG/DenseNet stage ends in a ReLU), as FitNets requires of r, and is the Proto2Proto
    code's adapter ``nn.Sequential(nn.Conv2d(512, 2048, 1), nn.ReLU())``.
    """

    def __init__(self, c_student: int, c_teacher: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_student, c_teacher, kernel_size=1, bias=True)

    def forward(self, backbone_s: Tensor) -> Tensor:
        """(B, C_s, H, W) → (B, C_t, H, W), non-negative; computed in float32."""
        return torch.relu(self.conv(backbone_s.float()))


def hint_loss(regressed_s: Tensor, backbone_t: Tensor) -> Tensor:
    """FitNets hint loss: mean over all B·C_t·H·W elements of (r(v^S) − u^T)².

    regressed_s, backbone_t (B, C_t, H, W) → scalar. (FitNets writes ½‖u − r(v)‖²; the plain
    mean squared error keeps the scale independent of C_t, H, W — a constant factor, absorbed
    by ``kd_weight``.)
    """
    if regressed_s.shape != backbone_t.shape:
        raise P2PError(
            f"hint: regressed student backbone output {tuple(regressed_s.shape)} does not match the "
            f"teacher's {tuple(backbone_t.shape)} (same H×W needed)"
        )
    # Written as (r − t)² rather than F.mse_loss: mse_loss saves its target for backward, which
    # fails for a teacher tensor made under torch.inference_mode(); the difference saves neither.
    return (regressed_s.float() - backbone_t.detach().float()).square().mean()


def _pairwise_distances(emb: Tensor) -> Tensor:
    """(B, E) → (B, B) Euclidean distances; the zero diagonal has gradient 0 (not NaN)."""
    diff = emb.unsqueeze(1) - emb.unsqueeze(0)
    return torch.linalg.vector_norm(diff, ord=2, dim=2)


def _normalised_distances(emb: Tensor) -> Tensor:
    """Pairwise distances divided by their mean over pairs i ≠ j (RKD's μ)."""
    d = _pairwise_distances(emb)
    b = d.shape[0]
    n_pairs = max(b * (b - 1), 1)
    mu = d.sum() / n_pairs  # the diagonal is 0, so this is the off-diagonal mean
    return d / mu.clamp(min=1e-12)


def _angles(emb: Tensor) -> Tensor:
    """(B, E) → (B, B, B) with [j, i, k] = cos∠(e_i − e_j, e_k − e_j) (0 if i = j or k = j)."""
    diff = F.normalize(emb.unsqueeze(0) - emb.unsqueeze(1), p=2, dim=2)  # [j, i] = n(e_i − e_j)
    return torch.bmm(diff, diff.transpose(1, 2))


def _check_embeddings(emb_s: Tensor, emb_t: Tensor) -> None:
    if emb_s.dim() != 2 or emb_t.dim() != 2 or emb_s.shape[0] != emb_t.shape[0]:
        raise P2PError(
            f"RKD needs (B, E) embeddings with the same batch size, got student "
            f"{tuple(emb_s.shape)} and teacher {tuple(emb_t.shape)}"
        )


def rkd_distance_loss(emb_s: Tensor, emb_t: Tensor) -> Tensor:
    """RKD-D: smooth-L1 (β = 1) between mean-normalised pairwise-distance matrices.

    emb_s (B, E_s), emb_t (B, E_t) → scalar; mean over all B² entries (the zero diagonal
    included, as in the original formulation). Invariant to scaling either embedding.
    """
    _check_embeddings(emb_s, emb_t)
    with torch.no_grad():
        t = _normalised_distances(emb_t.detach().float())
    s = _normalised_distances(emb_s.float())
    return F.smooth_l1_loss(s, t, reduction="mean", beta=1.0)


def rkd_angle_loss(emb_s: Tensor, emb_t: Tensor) -> Tensor:
    """RKD-A: smooth-L1 (β = 1) between the cosines of all triplet angles; mean over B³ entries."""
    _check_embeddings(emb_s, emb_t)
    with torch.no_grad():
        t = _angles(emb_t.detach().float())
    s = _angles(emb_s.float())
    return F.smooth_l1_loss(s, t, reduction="mean", beta=1.0)


def rkd_loss(emb_s: Tensor, emb_t: Tensor, *, w_distance: float = 25.0, w_angle: float = 50.0) -> Tensor:
    """Relational KD (Park et al., CVPR 2019): ``w_distance·RKD-D + w_angle·RKD-A``.

    emb_s (B, E_s), emb_t (B, E_t) → scalar; E_s and E_t may differ. The caller chooses the
    embedding: the registry's ``rkd`` method uses the spatially averaged add-on features
    ω (B, D) of each model. Needs B ≥ 2 to carry any signal (B = 1 gives 0).
    """
    return w_distance * rkd_distance_loss(emb_s, emb_t) + w_angle * rkd_angle_loss(emb_s, emb_t)


def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton logit KD: ``T² · mean_b KL(softmax(z^T/T) ‖ softmax(z^S/T))``.

    logits_s, logits_t (B, K) → scalar. The T² factor keeps gradient magnitudes comparable
    across temperatures.
    """
    if logits_s.shape != logits_t.shape:
        raise P2PError(
            f"KD: student logits {tuple(logits_s.shape)} and teacher logits "
            f"{tuple(logits_t.shape)} differ (same classes needed)"
        )
    if temperature <= 0:
        raise P2PError(f"KD temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(logits_s.float() / temperature, dim=1)
    log_p_t = F.log_softmax(logits_t.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2
