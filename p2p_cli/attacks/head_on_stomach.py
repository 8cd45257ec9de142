"""The head-on-stomach attack (Hoffmann et al. 2021, "This Looks Like That... Does it?", §3,
Eq. 2-3; success rate as in App. F.1).

For a correctly classified test image x and one of its top-k prototypes p_l (highest similarity
over all prototypes), S is the set of grid cells covered by p_l's high-activation box on x
(:func:`~p2p_cli.attacks.regions.best_match_region`) and S_noisy = A ∖ S. PGD (Madry et al.
2018) maximises Eq. 2, ``L = mean_{S_noisy} g_l(f(x+δ)) − mean_S g_l(f(x+δ))``, subject to
‖δ‖∞ ≤ ε (Eq. 3), with a random start, sign steps and projection onto the ε-ball and [0, 1].
The attack *succeeds* when the highest similarity of p_l outside S exceeds the highest inside S
on the perturbed image: the explanation has moved. An image counts as a success if any of its
top-k prototypes succeeds (tried in rank order, each from the clean image; the rest are skipped
once one succeeds).

Our reading of "patches' pixels": Eq. 3 lets δ range over the whole image, but the text adds
"we do not add noise to the entire image but only to those patches relevant for the similarity
scores". With ``region="target"`` (default) δ is confined to the pixels of the S_noisy cells, so
the original best-match patch itself is never touched and only the patches that must come to
look like the prototype are perturbed; ``region="image"`` is Eq. 3 literally (δ anywhere). The
authors' code perturbs the grid-aligned bounding rectangle of S_noisy, which for S_noisy = A ∖ S
is almost always the whole image, i.e. ``region="image"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from p2p_cli.attacks.options import REGIONS
from p2p_cli.attacks.pgd import attempt_generator, project, random_start
from p2p_cli.attacks.pixels import forward_pixels
from p2p_cli.attacks.regions import best_match_region, region_maxima, region_pixel_mask, stomach_objective
from p2p_cli.attacks.testset import check_sizes
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime


@dataclass(frozen=True)
class AttackSettings:
    """Settings of the head-on-stomach experiment (defaults: the paper's App. F.1)."""

    eps: float = 8 / 255
    step: float = 2 / 255
    iters: int = 40
    top_k: int = 5
    images: int = 200
    region: str = "target"
    adv_iters: int = 10
    percentile: float = 95.0
    batch_size: int = 32
    workers: int = 0
    seed: int = 0
    figures: int = 4

    def check(self) -> None:
        if self.iters < 0 or self.adv_iters < 0:
            raise P2PError("--iters and --adv-iters must be ≥ 0")
        check_sizes(self.top_k, self.images, self.batch_size, self.seed)
        if self.region not in REGIONS:
            raise P2PError(f"--region must be one of {', '.join(REGIONS)}; got '{self.region}'"
                           f"{did_you_mean(self.region, REGIONS)}")


@dataclass
class StomachBatch:
    """The head-on-stomach result for B images (the best attempt over the top-k prototypes).

    ``adv`` (B, 3, S, S) in [0, 1]; ``mask`` (B, 1, S, S) where δ was allowed; ``success``,
    ``prototype``, ``rank`` (0-based among the top-k), ``steps``, ``attempts``: (B,);
    ``region`` (B, H, W) bool, S of the best attempt; ``sim_clean`` (B,) = max_S g(x);
    ``sim_outside_clean`` (B,) = max_{A∖S} g(x); ``sim_inside_adv`` / ``sim_new`` (B,) = max over
    S / A∖S of g(x + δ); ``maps_clean`` / ``maps_adv`` (B, H, W) squared distances of the best
    prototype on x and x + δ; ``pred_adv`` (B,)."""

    adv: torch.Tensor
    mask: torch.Tensor
    success: torch.Tensor
    prototype: torch.Tensor
    rank: torch.Tensor
    steps: torch.Tensor
    attempts: torch.Tensor
    region: torch.Tensor
    sim_clean: torch.Tensor
    sim_outside_clean: torch.Tensor
    sim_inside_adv: torch.Tensor
    sim_new: torch.Tensor
    maps_clean: torch.Tensor
    maps_adv: torch.Tensor
    pred_adv: torch.Tensor

    @property
    def shift(self) -> torch.Tensor:
        """Similarity shift (B,): ``max_{A∖S} g(x+δ) − max_S g(x)`` — how far the new location's
        similarity rises above the original best match (> 0: a higher score somewhere else)."""
        return self.sim_new - self.sim_clean


def _clean_distances(model: ProtoPNet, clean: torch.Tensor, rt: Runtime, batch_size: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances (N, m, H, W), min distances (N, m)) of the clean images (N, 3, S, S), in fp32."""
    dist_chunks, min_chunks = [], []
    with torch.no_grad():
        for i in range(0, len(clean), batch_size):
            o = forward_pixels(model, clean[i:i + batch_size], rt)
            dist_chunks.append(o.distances.float())
            min_chunks.append(o.min_distances.float())
    return torch.cat(dist_chunks), torch.cat(min_chunks)


def head_on_stomach(model: ProtoPNet, clean: torch.Tensor, rt: Runtime, settings: AttackSettings,
                    keys: Sequence[int] | None = None, progress: Callable[..., None] | None = None) -> StomachBatch:
    """The head-on-stomach attack (Eq. 2-3) on N images (N, 3, S, S) in [0, 1].

    Each image is attacked with its most similar prototype first; if PGD does not move that
    prototype's best match out of S within ``settings.iters`` sign steps, the next prototype of
    its top-k is attacked from the clean image again, and so on; an image stops at its first
    success. Every PGD step: evaluate the current images, retire those whose explanation moved
    (:func:`~p2p_cli.attacks.regions.explanation_moved`), take
    ``x ← Π(x + step · sign(∇ₓ Eq. 2) · mask)`` for the rest, Π = projection onto the ε-ball
    around the clean image, the mask and [0, 1].

    The images run through one working batch of ``settings.batch_size`` that is refilled as
    images finish (continuous batching), so the batch stays full while the hard images take
    their k × iters steps. Random starts come from
    :func:`~p2p_cli.attacks.pgd.attempt_generator` (seed, ``keys[i]``, rank), so results do not
    depend on the batch size. ``progress(1)`` is called per finished image. The returned fields
    describe each image's best attempt (largest ``max_{A∖S} g − max_S g`` on its perturbed
    image; a success is always the best).
    """
    n, _, size, _ = clean.shape
    dev = clean.device
    keys = list(range(n)) if keys is None else [int(k) for k in keys]
    bs = settings.batch_size
    distances, min_distances = _clean_distances(model, clean, rt, bs)
    grid = distances.shape[-2:]
    k = min(settings.top_k, distances.shape[1])
    top = min_distances.argsort(dim=1)[:, :k]

    # per-image state of the current attempt
    adv = clean.clone()
    mask = torch.zeros_like(clean[:, :1])
    region = torch.zeros((n, *grid), dtype=torch.bool, device=dev)
    proto = torch.zeros(n, dtype=torch.long, device=dev)
    rank = torch.zeros(n, dtype=torch.long, device=dev)
    step_count = torch.zeros(n, dtype=torch.long, device=dev)
    # the best attempt per image
    best: dict[str, torch.Tensor] = {
        "margin": torch.full((n,), -math.inf, device=dev),
        "adv": clean.clone(), "mask": torch.zeros_like(mask), "region": torch.zeros_like(region),
        "prototype": torch.zeros_like(proto), "rank": torch.zeros_like(rank), "steps": torch.zeros_like(rank),
        "sim_clean": torch.zeros(n, device=dev), "sim_outside_clean": torch.zeros(n, device=dev),
        "sim_inside_adv": torch.zeros(n, device=dev), "sim_new": torch.zeros(n, device=dev),
        "maps_clean": torch.zeros((n, *grid), device=dev), "maps_adv": torch.zeros((n, *grid), device=dev),
        "pred_adv": torch.zeros_like(proto),
    }
    success = torch.zeros(n, dtype=torch.bool, device=dev)
    attempts = torch.zeros(n, dtype=torch.long, device=dev)

    def start(idx: torch.Tensor, r: torch.Tensor) -> None:
        """Begin attempt ``r`` (prototype rank) for images ``idx`` from their clean images."""
        p = top[idx, r]
        reg = best_match_region(distances[idx, p], size, settings.percentile)
        cells = torch.ones_like(reg) if settings.region == "image" else ~reg
        m = region_pixel_mask(cells, size)
        generators = [attempt_generator(settings.seed, keys[i], rr) for i, rr in zip(idx.tolist(), r.tolist(),
                                                                                     strict=True)]
        adv[idx] = random_start(clean[idx], m, settings.eps, generators)
        mask[idx], region[idx], proto[idx], rank[idx] = m, reg, p, r
        step_count[idx] = 0
        attempts[idx] += 1

    queue = list(range(n))
    active = torch.tensor(queue[:bs], dtype=torch.long, device=dev)
    del queue[:bs]
    if len(active):
        start(active, torch.zeros_like(active))
    while len(active):
        x = adv[active].detach().requires_grad_(True)
        out = forward_pixels(model, x, rt)
        sims = log_similarity(out.distances[torch.arange(len(active), device=dev), proto[active]])
        reg = region[active]
        inside, outside = region_maxima(sims.detach(), reg)
        won = outside > inside
        ended = won | (step_count[active] >= settings.iters)
        if ended.any():  # record finished attempts
            idx = active[ended]
            margin = (outside - inside)[ended]
            better = margin > best["margin"][idx]
            b = idx[better]
            if len(b):
                maps = distances[b, proto[b]]
                c_in, c_out = region_maxima(log_similarity(maps), region[b])
                values = {"margin": margin[better], "adv": adv[b], "mask": mask[b], "region": region[b],
                          "prototype": proto[b], "rank": rank[b], "steps": step_count[b], "sim_clean": c_in,
                          "sim_outside_clean": c_out, "sim_inside_adv": inside[ended][better],
                          "sim_new": outside[ended][better], "maps_clean": maps,
                          "maps_adv": out.distances.detach().float()[ended][better][
                              torch.arange(len(b), device=dev), proto[b]],
                          "pred_adv": out.logits.detach().argmax(1)[ended][better]}
                for key, v in values.items():
                    best[key][b] = v
            success[active[won]] = True
        going = ~ended
        if going.any():  # one PGD step (Eq. 3) for the attempts still running
            objective = stomach_objective(sims, reg)
            (grad,) = torch.autograd.grad(objective[going].sum(), x)
            g = active[going]
            stepped = x.detach()[going] + settings.step * grad[going].sign() * mask[g]
            adv[g] = project(stepped, clean[g], mask[g], settings.eps)
            step_count[g] += 1
        # images whose attempt ended: next prototype, or done
        retry = ended & ~won & (rank[active] + 1 < k)
        if retry.any():
            start(active[retry], rank[active[retry]] + 1)
        done = ended & ~retry
        if progress is not None and done.any():
            progress(int(done.sum()))
        active = active[~done]
        free = bs - len(active)
        if free > 0 and queue:
            new = torch.tensor(queue[:free], dtype=torch.long, device=dev)
            del queue[:free]
            start(new, torch.zeros_like(new))
            active = torch.cat([active, new])
    best.pop("margin")
    return StomachBatch(success=success, attempts=attempts, **best)
