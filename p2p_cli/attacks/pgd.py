"""Projected gradient descent in pixel space (Madry et al. 2018, "Towards Deep Learning Models
Resistant to Adversarial Attacks"): L∞ sign steps, a uniform random start in the ε-ball, and the
projection onto the ε-ball around the clean image, a pixel mask and [0, 1].

The head-on-stomach attack (Hoffmann et al. 2021, Eq. 3) uses these pieces with its own
objective (:mod:`p2p_cli.attacks.head_on_stomach`); :func:`pgd_cross_entropy` is the standard
attack behind the adversarial accuracy of the paper's Table 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from p2p_cli.attacks.pixels import forward_pixels
from p2p_cli.models.protopnet import ProtoPNet
from p2p_cli.runtime.device import Runtime


def project(adv: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto {x : |x − clean|∞ ≤ ε, x = clean outside ``mask``} ∩ [0, 1]^n (all (B, 3, S, S);
    ``mask`` (B, 1, S, S))."""
    return (clean + (adv - clean).clamp(-eps, eps) * mask).clamp(0.0, 1.0)


def random_start(clean: torch.Tensor, mask: torch.Tensor, eps: float,
                 generator: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
    """Uniform random start in the ε-ball (inside ``mask``), drawn on the CPU for reproducibility.

    clean: (B, 3, S, S); mask: (B, 1, S, S). With one ``generator`` the noise is a single draw of
    shape (B, 3, S, S); with B generators image b's noise comes from generator b alone (so it does
    not depend on which other images share the batch). Returns (B, 3, S, S)."""
    if isinstance(generator, torch.Generator):
        uniform = torch.rand(clean.shape, generator=generator)
    else:
        uniform = torch.stack([torch.rand(clean.shape[1:], generator=g) for g in generator])
    noise = (uniform * 2 - 1).to(clean.device) * eps
    return project(clean + noise, clean, mask, eps)


def attempt_generator(seed: int, key: int, rank: int) -> torch.Generator:
    """The random start of one attempt (image ``key``, prototype rank) — independent of batching."""
    return torch.Generator().manual_seed((seed * 1_000_003 + key * 101 + rank) % (2**63))


def pgd_cross_entropy(model: ProtoPNet, clean: torch.Tensor, labels: torch.Tensor, rt: Runtime, *, eps: float,
                      step: float, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Standard L∞ PGD (Madry et al. 2018) maximising the cross-entropy, on the whole image.

    clean: (B, 3, S, S) in [0, 1]; labels: (B,). Returns the predictions on the adversarial
    images, long (B,) — the "adversarial accuracy" of the paper's Table 3 (PGD-10, 2/255, 8/255).
    """
    mask = torch.ones_like(clean[:, :1])
    adv = random_start(clean, mask, eps, generator) if iters > 0 else clean
    for _ in range(iters):
        x = adv.detach().requires_grad_(True)
        loss = F.cross_entropy(forward_pixels(model, x, rt).logits.float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        adv = project(x.detach() + step * grad.sign(), clean, mask, eps)
    with torch.no_grad():
        return forward_pixels(model, adv, rt).logits.argmax(1)
