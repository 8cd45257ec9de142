"""FGSM adversarial training examples (the remedy of Hoffmann et al. 2021, App. F.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from p2p_cli.attacks.pixels import _channel_stats
from p2p_cli.runtime.device import Runtime


def fgsm_examples(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, rt: Runtime, *,
                  eps: float, step: float) -> torch.Tensor:
    """Fast adversarial training's examples (Wong, Rice & Kolter 2020, "Fast is better than free").

    images: ImageNet-normalised (B, 3, S, S); eps and step in [0, 1] pixel units (the paper:
    8/255 and 10/255), converted per channel to the normalised space (ε_c = ε / std_c). δ starts
    uniform in the ε-ball, takes one sign step on the cross-entropy of the logits and is
    projected back onto the ε-ball and the valid pixel range. Returns the perturbed batch
    (detached, same shape). The model's mode is left as it is (train mode updates BatchNorm
    statistics on the extra forward pass, as in Wong et al.).
    """
    mean, std = _channel_stats(images.device)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    eps_c, step_c = eps / std, step / std
    x = images.detach()
    delta = (torch.rand_like(x) * 2 - 1) * eps_c
    delta = (torch.minimum(torch.maximum(x + delta, lo), hi) - x).requires_grad_(True)
    with rt.autocast():
        out = model(x + delta)
    loss = F.cross_entropy(out.logits.float(), labels)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = delta.detach() + step_c * grad.sign()
    delta = torch.minimum(torch.maximum(delta, -eps_c), eps_c)
    adv = torch.minimum(torch.maximum(x + delta, lo), hi)
    return adv.contiguous(memory_format=torch.channels_last) if rt.channels_last else adv
