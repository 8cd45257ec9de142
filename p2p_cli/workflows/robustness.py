"""Robustness of ProtoPNet explanations (Hoffmann et al., 2021, "This Looks Like That... Does it?").

Everything here works on images in **[0, 1] pixel space**: budgets such as ε = 8/255 are pixel
units, attacks clip to [0, 1] and to the ε-ball, and the ImageNet normalisation the models
expect happens inside the forward pass (:func:`forward_pixels`).

* **Head on stomach** (paper §3, Eq. 2-3; success rate as in App. F.1). For a correctly
  classified test image x and one of its top-k prototypes p_l (highest similarity over all
  prototypes), S is the set of grid cells covered by p_l's high-activation box on x (the
  95th-percentile box of the bicubically upsampled similarity map, as ProtoPNet draws it;
  the arg-max cell always belongs to S) and S_noisy = A ∖ S, all other cells. PGD maximises
  Eq. 2, ``L = mean_{S_noisy} g_l(f(x+δ)) − mean_S g_l(f(x+δ))``, subject to ‖δ‖∞ ≤ ε (Eq. 3),
  with a random start, sign steps and projection onto the ε-ball and [0, 1]. The attack
  *succeeds* when the highest similarity of p_l outside S exceeds the highest inside S on the
  perturbed image — the explanation has moved. The image counts as a success if any of its
  top-k prototypes succeeds (tried in rank order, each from the clean image; the rest are
  skipped once one succeeds).

  Our reading of "patches' pixels": Eq. 3 lets δ range over the whole image, but the text adds
  "we do not add noise to the entire image but only to those patches relevant for the
  similarity scores". With ``region="target"`` (default) δ is confined to the pixels of the
  S_noisy cells (each cell's footprint ``[h·S/H, (h+1)·S/H)`` in the input), so the original
  best-match patch itself is never touched and only the patches that must come to look like
  the prototype are perturbed; ``region="image"`` is Eq. 3 literally (δ anywhere). The
  authors' code perturbs the grid-aligned bounding rectangle of S_noisy, which for
  S_noisy = A ∖ S is almost always the whole image, i.e. ``region="image"``.

* **JPEG** (paper §4, App. D.2): per test image, the similarities of all prototypes on the
  clean image and on its JPEG-compressed copy (quality 20): the top prototype's similarity on
  both, Spearman's rank correlation of all m similarities, and whether the top-k set changes.

* **Transfer**: the teacher's adversarial images (same images, same ε) are shown to each student:
  how often the student's explanation for the same prototype index moves when the teacher's
  does (Proto2Proto aligns prototypes index-wise, paper Eq. 5), against the same rate under
  random sign noise of the same budget. Teacher and students are judged by the same function on
  the same batches (:func:`_moved_on`, S from each model's own clean image).

* **FGSM training** (the App. F.1 remedy, Wong et al. 2020): :func:`fgsm_examples` perturbs a
  normalised training batch; the trainer calls it when ``adversarial: fgsm``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from p2p_cli.attacks.fgsm import fgsm_examples  # noqa: F401  (re-exported for the trainer)
from p2p_cli.attacks.pixels import _channel_stats, forward_pixels, normalize_pixels, to_pixels  # noqa: F401
from p2p_cli.data.datasets import DatasetIndex, ImageDataset, Sample, load_image
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.data.transforms import JPEG_QUALITY, jpeg_compress
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.atomic import atomic_write_bytes
from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.io.config import TrainConfig, config_from_dict, parse_number
from p2p_cli.io.rundir import RunDir, resolve_ref
from p2p_cli.models.factory import load_model
from p2p_cli.models.maps import high_activation_box, upsampled_similarity
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime, make_runtime
from p2p_cli.runtime.reporter import Reporter

ATTACKS = ("head-on-stomach", "jpeg")
REGIONS = ("target", "image")
DATASETS = ("synthetic", "cub", "cars", "folder")


# --------------------------------------------------------------------------------------------
# budgets and pixel space
# --------------------------------------------------------------------------------------------


def parse_budget(value: str | float, name: str) -> float:
    """``"8/255"``, ``"0.03"`` or a float → a pixel budget in [0, 1]; a one-line P2PError otherwise."""
    try:
        out = parse_number(value) if isinstance(value, str) else float(value)
    except ValueError:
        raise P2PError(f"--{name} expects a number or a fraction such as 8/255, got '{value}'") from None
    if not 0.0 <= out <= 1.0 or math.isnan(out):
        raise P2PError(f"--{name} is in [0, 1] pixel units (e.g. 8/255), got {value}")
    return out


# --------------------------------------------------------------------------------------------
# the explanation region S and the success criterion
# --------------------------------------------------------------------------------------------


def cell_edges(size: int, cells: int) -> torch.Tensor:
    """Pixel edges of ``cells`` grid cells over ``size`` pixels: cell i covers [e_i, e_{i+1}).

    Same rounding as the provenance ``patch_box`` (``round(i·S/H)``). Returns long (cells + 1,)."""
    return torch.tensor([round(i * size / cells) for i in range(cells + 1)], dtype=torch.long)


def pixel_cells(size: int, cells: int) -> torch.Tensor:
    """For every pixel row (or column) 0..size-1, the index of the grid cell it lies in: long (size,)."""
    edges = cell_edges(size, cells)
    return (torch.bucketize(torch.arange(size), edges[1:], right=True)).clamp(max=cells - 1)


def best_match_region(distance_maps: torch.Tensor, image_size: int, percentile: float = 95.0) -> torch.Tensor:
    """S of Eq. 2 for each of B (prototype, image) pairs: the cells of the high-activation box.

    distance_maps: (B, H, W) squared distances of one prototype per image. The similarity map is
    upsampled bicubically to ``image_size``; its ``percentile`` box (ProtoPNet's visualisation)
    is intersected with the cell footprints. The arg-max cell is always included.
    Returns bool (B, H, W).
    """
    b, h, w = distance_maps.shape
    ys, xs = cell_edges(image_size, h), cell_edges(image_size, w)
    region = torch.zeros(b, h, w, dtype=torch.bool)
    maps = distance_maps.detach().float().cpu()
    for i in range(b):
        x0, y0, x1, y1 = high_activation_box(maps[i], image_size, percentile)
        rows = (ys[:-1] < y1) & (ys[1:] > y0)
        cols = (xs[:-1] < x1) & (xs[1:] > x0)
        region[i] = rows[:, None] & cols[None, :]
        best = int(maps[i].flatten().argmin())
        region[i, best // w, best % w] = True
    return region.to(distance_maps.device)


def region_pixel_mask(cells: torch.Tensor, image_size: int) -> torch.Tensor:
    """bool cells (B, H, W) → float pixel mask (B, 1, S, S): 1 on the footprints of the cells."""
    _, h, w = cells.shape
    rows = pixel_cells(image_size, h).to(cells.device)
    cols = pixel_cells(image_size, w).to(cells.device)
    return cells[:, rows][:, :, cols].unsqueeze(1).float()


def region_maxima(sim_maps: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max over S, max over A ∖ S) of similarity maps (B, H, W) with S = ``region`` (B, H, W) bool.

    An empty side gives −inf. Returns two (B,) tensors."""
    neg = torch.finfo(sim_maps.dtype).min
    inside = sim_maps.masked_fill(~region, neg).flatten(1).amax(1)
    outside = sim_maps.masked_fill(region, neg).flatten(1).amax(1)
    inside = torch.where(region.flatten(1).any(1), inside, torch.full_like(inside, -math.inf))
    outside = torch.where((~region).flatten(1).any(1), outside, torch.full_like(outside, -math.inf))
    return inside, outside


def explanation_moved(sim_maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The success criterion (App. F.1): the prototype's best match left S.

    sim_maps: (B, H, W) similarities of one prototype on the (perturbed) images; region: (B, H, W)
    bool, S from the clean image. True where ``max_{A∖S} g > max_S g`` (strictly). Returns bool (B,)."""
    inside, outside = region_maxima(sim_maps, region)
    return outside > inside


def stomach_objective(sim_maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Eq. 2 per image: ``mean_{S_noisy} g − mean_S g`` with S_noisy = A ∖ S. (B, H, W) → (B,)."""
    r = region.float()
    n_in = r.flatten(1).sum(1).clamp(min=1)
    n_out = (1 - r).flatten(1).sum(1).clamp(min=1)
    return (sim_maps * (1 - r)).flatten(1).sum(1) / n_out - (sim_maps * r).flatten(1).sum(1) / n_in


# --------------------------------------------------------------------------------------------
# PGD (Eq. 3)
# --------------------------------------------------------------------------------------------


def _project(adv: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto {x : |x − clean|∞ ≤ ε, x = clean outside ``mask``} ∩ [0, 1]^n (all (B, 3, S, S);
    ``mask`` (B, 1, S, S))."""
    return (clean + (adv - clean).clamp(-eps, eps) * mask).clamp(0.0, 1.0)


def random_start(clean: torch.Tensor, mask: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform random start in the ε-ball (inside ``mask``), drawn on the CPU for reproducibility."""
    noise = (torch.rand(clean.shape, generator=generator) * 2 - 1).to(clean.device) * eps
    return _project(clean + noise, clean, mask, eps)


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
        adv = _project(x.detach() + step * grad.sign(), clean, mask, eps)
    with torch.no_grad():
        return forward_pixels(model, adv, rt).logits.argmax(1)


# --------------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------------


@dataclass
class Subject:
    """A model under test: loaded (eval, frozen, on the runtime's device) with its run records."""

    name: str
    run: RunDir
    model: ProtoPNet
    meta: dict[str, Any]
    cfg: TrainConfig | None
    weights: str
    prototypes: list[dict[str, Any]] | None = None

    @property
    def image_size(self) -> int:
        return int(self.cfg.image_size) if self.cfg else 224

    @property
    def crop_bbox(self) -> bool:
        return bool(self.cfg.crop_bbox) if self.cfg else False

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.meta.get("class_names") or []]


def load_subject(ref: str | Path, workdir: Path, rt: Runtime) -> Subject:
    """Resolve a model REF and load it frozen (no parameter requires grad) on ``rt.device``."""
    run = resolve_ref(ref, workdir)
    model, meta = load_model(run.model_path)
    if meta.get("arch") != "protopnet":
        raise P2PError(f"'{run.path}' is not a ProtoPNet run (arch {meta.get('arch')})")
    cfg = config_from_dict(run.read_config(), source=str(run.config_path)) if run.config_path.is_file() else None
    weights = weights_hash(model.state_dict())
    model.to(rt.device).eval()
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    records = None
    if run.prototypes_path.is_file():
        try:
            doc = json.loads(run.prototypes_path.read_text(encoding="utf-8"))
            records = doc.get("prototypes") if isinstance(doc, dict) else None
        except (OSError, json.JSONDecodeError):
            records = None
        if records is not None and len(records) != model.num_prototypes:
            records = None
    return Subject(run.name, run, model, meta, cfg, weights, records)


def reference_config(subjects: Sequence[Subject], dataset: str | None, data_root: str | None) -> TrainConfig:
    """The dataset settings: the first model's run config, with ``--dataset``/``--data-root`` applied."""
    cfg = next((s.cfg for s in subjects if s.cfg is not None), None)
    if cfg is None:
        if not dataset:
            raise P2PError("no run config.yaml records the dataset; pass --dataset (and --data-root)")
        cfg = TrainConfig()
    changes: dict[str, Any] = {}
    if dataset:
        if dataset not in DATASETS:
            raise P2PError(f"unknown dataset '{dataset}'{did_you_mean(dataset, DATASETS)}; choose from "
                           f"{', '.join(DATASETS)}")
        changes["dataset"] = dataset
        if dataset != cfg.dataset:
            changes["data_root"] = None
    if data_root:
        changes["data_root"] = data_root
    cfg = dataclasses.replace(cfg, **changes)
    if cfg.dataset != "synthetic" and not cfg.data_root:
        raise P2PError(f"dataset '{cfg.dataset}' needs a data root (--data-root)")
    return cfg


def check_classes(subject: Subject, index: DatasetIndex) -> None:
    names = subject.classes
    if names and names != index.classes:
        raise P2PError(f"'{subject.name}' was trained on {len(names)} classes ({', '.join(names[:3])}, …) but "
                       f"{index.name} at {index.root} has {len(index.classes)} ({', '.join(index.classes[:3])}, …)")


def raw_test_set(index: DatasetIndex, image_size: int, crop_bbox: bool) -> ImageDataset:
    """The test split as uint8 (3, S, S) images (no normalisation: attacks work in pixel space)."""
    if not index.test:
        raise P2PError(f"the test split of {index.name} ({index.root}) has no images")
    return ImageDataset(index.test, None, image_size=image_size, crop_bbox=crop_bbox)


def _loader(ds: ImageDataset, indices: Sequence[int], batch_size: int, workers: int) -> DataLoader:
    return DataLoader(Subset(ds, list(indices)), batch_size=batch_size, shuffle=False, num_workers=workers)


def image_order(n: int, seed: int) -> list[int]:
    """The seeded order in which test images are drawn (the same for every model)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


@torch.no_grad()
def clean_predictions(subject: Subject, ds: ImageDataset, rt: Runtime, batch_size: int, workers: int,
                      advance: Callable[..., None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, labels) on the whole test set, long (N,) each, in dataset order."""
    preds, labels = [], []
    for images, y, _ in _loader(ds, range(len(ds)), batch_size, workers):
        preds.append(forward_pixels(subject.model, to_pixels(images.to(rt.device)), rt).logits.argmax(1).cpu())
        labels.append(y)
        if advance:
            advance(len(y))
    return torch.cat(preds), torch.cat(labels)


# --------------------------------------------------------------------------------------------
# head on stomach
# --------------------------------------------------------------------------------------------


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
        if self.top_k < 1:
            raise P2PError(f"--top-k must be ≥ 1, got {self.top_k}")
        if self.images < 1:
            raise P2PError(f"--images must be ≥ 1, got {self.images}")
        if self.batch_size < 1:
            raise P2PError(f"--batch-size must be ≥ 1, got {self.batch_size}")
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


def head_on_stomach(model: ProtoPNet, clean: torch.Tensor, rt: Runtime, settings: AttackSettings,
                    keys: Sequence[int] | None = None, progress: Callable[..., None] | None = None) -> StomachBatch:
    """The head-on-stomach attack (Eq. 2-3) on N images (N, 3, S, S) in [0, 1].

    Each image is attacked with its most similar prototype first; if PGD does not move that
    prototype's best match out of S within ``settings.iters`` sign steps, the next prototype of
    its top-k is attacked from the clean image again, and so on; an image stops at its first
    success. Every PGD step: evaluate the current images, retire those whose explanation moved
    (:func:`explanation_moved`), take ``x ← Π(x + step · sign(∇ₓ Eq. 2) · mask)`` for the rest,
    Π = projection onto the ε-ball around the clean image, the mask and [0, 1].

    The images run through one working batch of ``settings.batch_size`` that is refilled as
    images finish (continuous batching), so the batch stays full while the hard images take
    their k × iters steps. Random starts come from :func:`attempt_generator` (seed, ``keys[i]``,
    rank), so results do not depend on the batch size. ``progress(1)`` is called per finished
    image. The returned fields describe each image's best attempt (largest
    ``max_{A∖S} g − max_S g`` on its perturbed image; a success is always the best).
    """
    n, _, size, _ = clean.shape
    dev = clean.device
    keys = list(range(n)) if keys is None else [int(k) for k in keys]
    bs = settings.batch_size
    dist_chunks, min_chunks = [], []
    with torch.no_grad():
        for i in range(0, n, bs):
            o = forward_pixels(model, clean[i:i + bs], rt)
            dist_chunks.append(o.distances.float())
            min_chunks.append(o.min_distances.float())
    distances, min_distances = torch.cat(dist_chunks), torch.cat(min_chunks)
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
        noise = torch.stack([torch.rand(clean.shape[1:], generator=attempt_generator(settings.seed, keys[int(i)],
                                                                                    int(rr)))
                             for i, rr in zip(idx.tolist(), r.tolist(), strict=True)]).to(dev)
        adv[idx] = _project(clean[idx] + (noise * 2 - 1) * settings.eps, clean[idx], m, settings.eps)
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
            adv[g] = _project(stepped, clean[g], mask[g], settings.eps)
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


@dataclass
class FigureExample:
    """Arrays for one before/after figure row (rendered by :mod:`p2p_cli.viz.robustness`)."""

    title: str
    clean: np.ndarray  # uint8 (S, S, 3)
    adv: np.ndarray  # uint8 (S, S, 3)
    heat_clean: np.ndarray  # float32 (S, S) upsampled similarity of the prototype on x
    heat_adv: np.ndarray  # float32 (S, S) on x + δ
    box_clean: list[int]  # [x0, y0, x1, y1] 95th-percentile box on x
    box_adv: list[int]  # the same on x + δ
    region_box: list[int]  # pixel footprint of S (the cells of the original best match)
    cell_adv: list[int]  # pixel footprint of the best-matching cell on x + δ (outside S on success)
    perturbation: np.ndarray  # float32 (S, S, 3) δ in pixel units
    eps: float
    sim_clean: float  # max_S g(x)
    sim_adv: float  # max_{A∖S} g(x + δ)
    sim_inside_adv: float  # max_S g(x + δ)
    source: np.ndarray | None = None  # uint8 (S, S, 3): the prototype's source image
    source_box: list[int] | None = None


def _uint8_image(pixels: torch.Tensor) -> np.ndarray:
    return (pixels.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def prototype_source(subject: Subject, j: int, index: DatasetIndex | None
                     ) -> tuple[np.ndarray | None, list[int] | None]:
    """The pushed prototype's source image at the model's input size and its activation box, if known."""
    rec = subject.prototypes[j] if subject.prototypes and j < len(subject.prototypes) else None
    src = rec.get("source") if rec else None
    if not src or index is None:
        return None, None
    i = int(src.get("index", -1))
    sample: Sample | None = index.train[i] if 0 <= i < len(index.train) else None
    if sample is None or str(sample.path) != str(src.get("path")) or not Path(sample.path).is_file():
        return None, None
    image = load_image(sample, subject.image_size, bool(rec.get("crop_bbox", subject.crop_bbox)))  # type: ignore[union-attr]
    return image.permute(1, 2, 0).numpy(), rec.get("activation_box")  # type: ignore[union-attr]


def figure_example(subject: Subject, batch: StomachBatch, i: int, clean: torch.Tensor, label: str,
                   eps: float, index: DatasetIndex | None) -> FigureExample:
    size = clean.shape[-1]
    j = int(batch.prototype[i])
    heat_c = upsampled_similarity(batch.maps_clean[i].cpu(), size)
    heat_a = upsampled_similarity(batch.maps_adv[i].cpu(), size)
    source, source_box = prototype_source(subject, j, index)
    h, w = batch.region.shape[-2:]
    ys, xs = cell_edges(size, h).tolist(), cell_edges(size, w).tolist()
    rows = torch.nonzero(batch.region[i].any(1)).flatten().tolist()
    cols = torch.nonzero(batch.region[i].any(0)).flatten().tolist()
    region_box = [xs[cols[0]], ys[rows[0]], xs[cols[-1] + 1], ys[rows[-1] + 1]]
    best = int(batch.maps_adv[i].flatten().argmin())
    bh, bw = best // w, best % w
    return FigureExample(
        title=f"{label}, prototype {j} (rank {int(batch.rank[i]) + 1})",
        clean=_uint8_image(clean[i]), adv=_uint8_image(batch.adv[i]),
        heat_clean=heat_c.numpy(), heat_adv=heat_a.numpy(),
        box_clean=high_activation_box(batch.maps_clean[i].cpu(), size),
        box_adv=high_activation_box(batch.maps_adv[i].cpu(), size), region_box=region_box,
        cell_adv=[xs[bw], ys[bh], xs[bw + 1], ys[bh + 1]],
        perturbation=(batch.adv[i] - clean[i]).detach().cpu().permute(1, 2, 0).numpy(),
        eps=eps, sim_clean=float(batch.sim_clean[i]), sim_adv=float(batch.sim_new[i]),
        sim_inside_adv=float(batch.sim_inside_adv[i]),
        source=source, source_box=source_box)


@dataclass
class TransferStats:
    """Per student: counts over the teacher's attacked images (see :func:`run_head_on_stomach`)."""

    teacher_moved: int = 0
    student_moved_with_teacher: int = 0
    student_moved: int = 0
    student_moved_random: int = 0
    teacher_moved_random: int = 0
    attacked: int = 0


@torch.no_grad()
def _moved_on(model: ProtoPNet, clean: torch.Tensor, perturbed: torch.Tensor, prototypes: torch.Tensor,
              rt: Runtime, percentile: float) -> torch.Tensor:
    """Whether prototype ``prototypes[b]``'s best match leaves its clean region S on ``perturbed``: bool (B,)."""
    size = clean.shape[-1]
    ar = torch.arange(len(prototypes), device=clean.device)
    maps = forward_pixels(model, clean, rt).distances.float()[ar, prototypes]
    region = best_match_region(maps, size, percentile)
    sims = log_similarity(forward_pixels(model, perturbed, rt).distances.float()[ar, prototypes])
    return explanation_moved(sims, region)


def run_head_on_stomach(subject: Subject, ds: ImageDataset, rt: Runtime, settings: AttackSettings,
                        reporter: Reporter, *, index: DatasetIndex | None = None,
                        students: Sequence[Subject] = ()) -> dict[str, Any]:
    """The head-on-stomach experiment for one model; returns its JSON-ready report entry.

    The test images are drawn in a seeded order (:func:`image_order`); the first
    ``settings.images`` that the model classifies correctly are attacked. Reported: success
    rate, clean accuracy (whole test set), adversarial accuracy (PGD-``adv_iters`` on the
    cross-entropy, over the first ``settings.images`` images of the same order, correct or not),
    the fraction of attacked images still classified correctly, the mean similarity shift
    (:attr:`StomachBatch.shift`), per-image records, and — with ``students`` — the transfer
    counts. ``"_figures"`` holds :class:`FigureExample` objects for the ``settings.figures``
    successful attacks with the largest similarity shift.
    """
    t0 = time.perf_counter()
    model = subject.model
    with reporter.task(f"{subject.name}: clean accuracy", len(ds)) as advance:
        preds, labels = clean_predictions(subject, ds, rt, settings.batch_size, settings.workers, advance)
    correct = preds == labels
    order = image_order(len(ds), settings.seed)
    chosen = [i for i in order if bool(correct[i])][: settings.images]
    gen = torch.Generator().manual_seed(settings.seed)
    noise_gen = torch.Generator().manual_seed(settings.seed + 1)  # the transfer view's random-noise control

    adv_correct = adv_seen = 0
    if settings.adv_iters > 0:
        subset = order[: settings.images]
        with reporter.task(f"{subject.name}: PGD-{settings.adv_iters} accuracy", len(subset)) as advance:
            for images, y, _ in _loader(ds, subset, settings.batch_size, settings.workers):
                pixels, y = to_pixels(images.to(rt.device)), y.to(rt.device)
                p = pgd_cross_entropy(model, pixels, y, rt, eps=settings.eps, step=settings.step,
                                      iters=settings.adv_iters, generator=gen)
                adv_correct += int((p == y).sum())
                adv_seen += len(y)
                advance(len(y))

    records: list[dict[str, Any]] = []
    figures: list[FigureExample] = []
    transfer = {s.name: TransferStats() for s in students}
    keys: list[int] = []
    labels_list, images_list = [], []
    for images, y, base in _loader(ds, chosen, settings.batch_size, settings.workers):
        images_list.append(images)
        labels_list.append(y)
        keys.extend(int(b) for b in base)
    if not keys:
        raise P2PError(f"'{subject.name}' classifies no test image correctly: nothing to attack")
    clean = to_pixels(torch.cat(images_list).to(rt.device))
    y = torch.cat(labels_list).to(rt.device)
    with reporter.task(f"{subject.name}: head on stomach", len(chosen)) as advance:
        batch = head_on_stomach(model, clean, rt, settings, keys=keys, progress=advance)
    linf = float((batch.adv - clean).abs().max())
    for i in range(len(keys)):
        records.append({
            "index": keys[i], "label": int(y[i]), "success": bool(batch.success[i]),
            "prototype": int(batch.prototype[i]), "rank": int(batch.rank[i]) + 1,
            "steps": int(batch.steps[i]), "attempts": int(batch.attempts[i]),
            "sim_clean": float(batch.sim_clean[i]), "sim_new": float(batch.sim_new[i]),
            "sim_inside_adv": float(batch.sim_inside_adv[i]),
            "sim_outside_clean": float(batch.sim_outside_clean[i]),
            "shift": float(batch.shift[i]), "still_correct": bool(batch.pred_adv[i] == y[i]),
            "region_cells": int(batch.region[i].sum()),
        })
    shown = sorted((i for i in range(len(keys)) if batch.success[i]), key=lambda i: -float(batch.shift[i]))
    for i in sorted(shown[: settings.figures]):  # the successful attacks with the largest shift
        figures.append(figure_example(subject, batch, i, clean, f"test #{keys[i]}", settings.eps, index))
    if students:
        with reporter.task(f"{subject.name}: transfer to {len(students)} model(s)", len(keys)) as advance:
            for lo in range(0, len(keys), settings.batch_size):
                sl = slice(lo, lo + settings.batch_size)
                c, a, p = clean[sl], batch.adv[sl], batch.prototype[sl]
                # re-evaluated exactly like the students' (same batches), so a copy of the teacher agrees
                ok = _moved_on(model, c, a, p, rt, settings.percentile)
                noise = torch.rand(c.shape, generator=noise_gen).to(c.device) * 2 - 1
                randomised = (c + settings.eps * noise.sign() * batch.mask[sl]).clamp(0, 1)
                t_rand = _moved_on(model, c, randomised, p, rt, settings.percentile)
                for s in students:
                    st = transfer[s.name]
                    moved = _moved_on(s.model, c, a, p, rt, settings.percentile)
                    moved_rand = _moved_on(s.model, c, randomised, p, rt, settings.percentile)
                    st.attacked += len(p)
                    st.teacher_moved += int(ok.sum())
                    st.student_moved_with_teacher += int((moved & ok).sum())
                    st.student_moved += int(moved.sum())
                    st.student_moved_random += int(moved_rand.sum())
                    st.teacher_moved_random += int(t_rand.sum())
                advance(len(p))

    n = len(records)
    succ = [r for r in records if r["success"]]

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    entry: dict[str, Any] = {
        "backbone": subject.model.config.backbone,
        "weights": subject.weights,
        "test_images": len(ds),
        "attacked": n,
        "correct_available": int(correct.sum()),
        "success_rate": len(succ) / n if n else None,
        "clean_acc": float(correct.float().mean()) if len(ds) else None,
        "adv_acc": adv_correct / adv_seen if adv_seen else None,
        "adv_acc_images": adv_seen,
        "still_correct": mean([float(r["still_correct"]) for r in records]),
        "success_still_correct": mean([float(r["success"] and r["still_correct"]) for r in records]),
        "shift": mean([r["shift"] for r in records]),
        "shift_success": mean([r["shift"] for r in succ]),
        "sim_clean": mean([r["sim_clean"] for r in records]),
        "sim_new": mean([r["sim_new"] for r in records]),
        "steps_success": mean([float(r["steps"]) for r in succ]),
        "success_rank": {str(k + 1): sum(r["rank"] == k + 1 for r in succ) for k in range(settings.top_k)},
        "linf": linf,
        "seconds": round(time.perf_counter() - t0, 2),
        "images": records,
        "_figures": figures,
    }
    if students:
        entry["transfer"] = {name: _transfer_entry(st) for name, st in transfer.items()}
    return entry


def _transfer_entry(st: TransferStats) -> dict[str, Any]:
    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"attacked": st.attacked, "teacher_moved": st.teacher_moved,
            "student_moved_with_teacher": st.student_moved_with_teacher,
            "transfer_rate": rate(st.student_moved_with_teacher, st.teacher_moved),
            "student_moved": rate(st.student_moved, st.attacked),
            "student_moved_random": rate(st.student_moved_random, st.attacked),
            "teacher_moved_random": rate(st.teacher_moved_random, st.attacked)}


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between matching rows of a and b (N, m) (average ranks for ties); NaN for a constant row."""
    from scipy.stats import rankdata

    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


@torch.no_grad()
def jpeg_batch(model: ProtoPNet, images: torch.Tensor, rt: Runtime, quality: int) -> dict[str, torch.Tensor]:
    """Clean vs JPEG for uint8 images (B, 3, S, S): similarities (B, m), predictions (B,) and the
    arg-min cell (B, m) of every prototype on both versions (keys ``*_clean`` / ``*_jpeg``)."""
    out: dict[str, torch.Tensor] = {}
    for key, batch in (("clean", images), ("jpeg", jpeg_compress(images.cpu(), quality).to(rt.device))):
        o = forward_pixels(model, to_pixels(batch.to(rt.device)), rt)
        out[f"sims_{key}"] = log_similarity(o.min_distances.float()).cpu()
        out[f"pred_{key}"] = o.logits.argmax(1).cpu()
        out[f"loc_{key}"] = o.distances.flatten(2).argmin(2).cpu()
    return out


def jpeg_statistics(sims_clean: np.ndarray, sims_jpeg: np.ndarray, loc_clean: np.ndarray, loc_jpeg: np.ndarray,
                    top_k: int) -> dict[str, np.ndarray]:
    """Per-image JPEG measures from similarities (N, m) and arg-min cells (N, m) of both versions.

    ``top_clean`` (the clean image's most similar prototype), its similarity on both versions
    (``top_sim_clean``, ``top_sim_jpeg``), the same for the JPEG image's top prototype
    (``jtop_sim_jpeg``, ``jtop_sim_clean``; the paper's direction, App. D.2), Spearman ``rho``
    of all m similarities, ``top1_changed``, ``topk_changed`` (the top-k sets differ),
    ``topk_overlap`` (|∩| / k), and ``location_moved`` (the top prototype's best-match cell).
    """
    n, m = sims_clean.shape
    k = min(top_k, m)
    rows = np.arange(n)
    top_c = sims_clean.argmax(1)
    top_j = sims_jpeg.argmax(1)
    set_c = np.sort(np.argsort(-sims_clean, axis=1, kind="stable")[:, :k], axis=1)
    set_j = np.sort(np.argsort(-sims_jpeg, axis=1, kind="stable")[:, :k], axis=1)
    overlap = np.array([len(np.intersect1d(set_c[i], set_j[i])) for i in range(n)], dtype=np.float64) / k
    return {
        "top_clean": top_c,
        "top_sim_clean": sims_clean[rows, top_c],
        "top_sim_jpeg": sims_jpeg[rows, top_c],
        "jtop_sim_jpeg": sims_jpeg[rows, top_j],
        "jtop_sim_clean": sims_clean[rows, top_j],
        "rho": spearman_rows(sims_clean, sims_jpeg),
        "top1_changed": top_c != top_j,
        "topk_changed": (set_c != set_j).any(1),
        "topk_overlap": overlap,
        "location_moved": loc_clean[rows, top_c] != loc_jpeg[rows, top_c],
    }


@dataclass(frozen=True)
class JpegSettings:
    quality: int = JPEG_QUALITY
    top_k: int = 5
    images: int | None = None  # None: every test image
    batch_size: int = 32
    workers: int = 0
    seed: int = 0

    def check(self) -> None:
        if not 1 <= self.quality <= 100:
            raise P2PError(f"--quality is a JPEG quality in [1, 100], got {self.quality}")
        if self.top_k < 1:
            raise P2PError(f"--top-k must be ≥ 1, got {self.top_k}")
        if self.images is not None and self.images < 1:
            raise P2PError(f"--images must be ≥ 1, got {self.images}")
        if self.batch_size < 1:
            raise P2PError(f"--batch-size must be ≥ 1, got {self.batch_size}")


def run_jpeg(subject: Subject, ds: ImageDataset, rt: Runtime, settings: JpegSettings,
             reporter: Reporter) -> dict[str, Any]:
    """The JPEG experiment for one model; returns its JSON-ready report entry.

    Images: every test image, or the first ``settings.images`` of the seeded order. Summary:
    accuracy on both versions, mean top-prototype similarity on both, mean/median ρ, the fractions
    with a changed top-1 / top-k / best-match location, mean top-k overlap; ``"_arrays"`` holds
    the per-image arrays for the histograms.
    """
    t0 = time.perf_counter()
    indices = list(range(len(ds))) if settings.images is None else image_order(len(ds), settings.seed)[
        : settings.images]
    parts: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    with reporter.task(f"{subject.name}: JPEG q{settings.quality}", len(indices)) as advance:
        for images, y, _ in _loader(ds, indices, settings.batch_size, settings.workers):
            for key, v in jpeg_batch(subject.model, images.to(rt.device), rt, settings.quality).items():
                parts.setdefault(key, []).append(v)
            labels.append(y)
            advance(len(y))
    cat = {k: torch.cat(v).numpy() for k, v in parts.items()}
    y = torch.cat(labels).numpy()
    stats = jpeg_statistics(cat["sims_clean"], cat["sims_jpeg"], cat["loc_clean"], cat["loc_jpeg"], settings.top_k)

    def fmean(a: np.ndarray) -> float | None:
        a = np.asarray(a, dtype=np.float64)
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else None

    rho = stats["rho"]
    entry: dict[str, Any] = {
        "backbone": subject.model.config.backbone,
        "weights": subject.weights,
        "images": len(y),
        "acc_clean": fmean(cat["pred_clean"] == y),
        "acc_jpeg": fmean(cat["pred_jpeg"] == y),
        "top_sim_clean": fmean(stats["top_sim_clean"]),
        "top_sim_jpeg": fmean(stats["top_sim_jpeg"]),
        "top_sim_drop": fmean(stats["top_sim_clean"] - stats["top_sim_jpeg"]),
        "jtop_sim_jpeg": fmean(stats["jtop_sim_jpeg"]),
        "jtop_sim_clean": fmean(stats["jtop_sim_clean"]),
        "rho_mean": fmean(rho),
        "rho_median": float(np.nanmedian(rho)) if np.isfinite(rho).any() else None,
        "top1_changed": fmean(stats["top1_changed"]),
        "topk_changed": fmean(stats["topk_changed"]),
        "topk_overlap": fmean(stats["topk_overlap"]),
        "location_moved": fmean(stats["location_moved"]),
        "per_image": {
            "index": [int(i) for i in indices],
            "label": y.tolist(),
            "top_prototype": stats["top_clean"].tolist(),
            "top_sim_clean": stats["top_sim_clean"].tolist(),
            "top_sim_jpeg": stats["top_sim_jpeg"].tolist(),
            "rho": [None if not math.isfinite(v) else float(v) for v in rho],
            "topk_changed": stats["topk_changed"].tolist(),
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "_arrays": stats,
    }
    return entry


# --------------------------------------------------------------------------------------------
# the whole command
# --------------------------------------------------------------------------------------------


@dataclass
class RobustnessOptions:
    attack: str = "head-on-stomach"
    stomach: AttackSettings = field(default_factory=AttackSettings)
    jpeg: JpegSettings = field(default_factory=JpegSettings)
    teacher: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    precision: str | None = None
    device: str = "auto"
    out: Path | None = None


def run_robustness(model_refs: Sequence[str], *, workdir: Path, options: RobustnessOptions,
                   reporter: Reporter | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """Run ``options.attack`` on every model; write the figures; return the JSON-ready report.

    Shape: ``{"attack", "settings", "dataset", "models": {NAME: entry}, "figures": [paths],
    "seconds"}`` (+ ``"teacher"`` in the transfer view), entries as returned by
    :func:`run_head_on_stomach` / :func:`run_jpeg` without their private ``_`` keys.
    """
    t0 = time.perf_counter()
    opts = options
    if opts.attack not in ATTACKS:
        raise P2PError(f"unknown attack '{opts.attack}'{did_you_mean(opts.attack, ATTACKS)}; choose from "
                       f"{', '.join(ATTACKS)}")
    (opts.stomach if opts.attack == "head-on-stomach" else opts.jpeg).check()
    if not model_refs and not opts.teacher:
        raise P2PError("robustness needs at least one model: --model REF (a run directory or a run name)")
    if opts.teacher and opts.attack != "head-on-stomach":
        raise P2PError("--teacher (the transfer view) applies to --attack head-on-stomach")
    rep = reporter or Reporter(enabled=False)
    refs = ([opts.teacher] if opts.teacher else []) + [r for r in model_refs]
    if rt is None:
        first = resolve_ref(refs[0], workdir)
        run_cfg = first.read_config() if first.config_path.is_file() else {}
        rt = make_runtime(opts.device, opts.precision or str(run_cfg.get("precision", "auto")),
                          channels_last=bool(run_cfg.get("channels_last", True)))
    subjects: list[Subject] = []
    seen: set[Path] = set()
    for ref in refs:
        s = load_subject(ref, workdir, rt)
        key = s.run.path.resolve()
        if key in seen:
            continue
        seen.add(key)
        subjects.append(s)
    names: dict[str, int] = {}
    for s in subjects:
        if s.name in names:
            names[s.name] += 1
            s.name = f"{s.name}#{names[s.name]}"
        else:
            names[s.name] = 1
    teacher = subjects[0] if opts.teacher else None
    students = subjects[1:] if teacher else []
    if teacher is not None:
        if not students:
            raise P2PError("the transfer view needs students: --teacher REF --model STUDENT [--model ...]")
        for s in students:
            if s.model.num_prototypes != teacher.model.num_prototypes:
                raise P2PError(f"transfer needs index-aligned prototypes: teacher '{teacher.name}' has "
                               f"{teacher.model.num_prototypes}, student '{s.name}' {s.model.num_prototypes}")
            if s.image_size != teacher.image_size:
                raise P2PError(f"transfer needs the same input size: teacher '{teacher.name}' "
                               f"{teacher.image_size} px, student '{s.name}' {s.image_size} px")
    cfg = reference_config(subjects, opts.dataset, opts.data_root)
    index = load_dataset_index(cfg)
    for s in subjects:
        check_classes(s, index)
    datasets: dict[tuple[int, bool], ImageDataset] = {}

    def test_set(s: Subject) -> ImageDataset:
        key = (s.image_size, s.crop_bbox)
        if key not in datasets:
            datasets[key] = raw_test_set(index, *key)
        return datasets[key]

    report: dict[str, Any] = {"attack": opts.attack, "dataset": index.name, "device": str(rt.device),
                              "precision": str(rt.amp_dtype or "fp32"), "models": {}}
    if opts.attack == "head-on-stomach":
        st = opts.stomach
        report["settings"] = {"eps": st.eps, "step": st.step, "iters": st.iters, "top_k": st.top_k,
                              "images": st.images, "region": st.region, "adv_iters": st.adv_iters,
                              "percentile": st.percentile, "seed": st.seed}
        for s in subjects:
            report["models"][s.name] = run_head_on_stomach(
                s, test_set(s), rt, st, rep, index=index, students=students if s is teacher else ())
        if teacher is not None:
            report["teacher"] = teacher.name
    else:
        js = opts.jpeg
        report["settings"] = {"quality": js.quality, "top_k": js.top_k, "images": js.images, "seed": js.seed}
        for s in subjects:
            report["models"][s.name] = run_jpeg(s, test_set(s), rt, js, rep)
    report["figures"] = write_figures(report, opts) if opts.out is not None else []
    for entry in report["models"].values():
        for key in [k for k in entry if k.startswith("_")]:
            del entry[key]
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_figures(report: dict[str, Any], opts: RobustnessOptions) -> list[str]:
    """PNG figures into ``opts.out``: before/after rows (head on stomach) or histograms (JPEG)."""
    from p2p_cli.viz.robustness import jpeg_histograms, stomach_figure

    assert opts.out is not None
    paths: list[str] = []
    for name, entry in report["models"].items():
        if report["attack"] == "head-on-stomach":
            examples = entry.get("_figures") or []
            if not examples:
                continue
            png = stomach_figure(examples, title=f"{name}: head on stomach (ε = {opts.stomach.eps * 255:.3g}/255, "
                                                 f"{opts.stomach.iters} steps)")
            path = opts.out / f"head-on-stomach-{_safe(name)}.png"
        else:
            a = entry["_arrays"]
            png = jpeg_histograms(a, name=name, quality=opts.jpeg.quality, top_k=opts.jpeg.top_k)
            path = opts.out / f"jpeg-{_safe(name)}.png"
        atomic_write_bytes(path, png)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------
# console output
# --------------------------------------------------------------------------------------------


def _fmt(v: Any, percent: bool = False, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if percent:
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Rich tables of a :func:`run_robustness` report on stdout."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    models = report["models"]
    s = report.get("settings", {})
    if report["attack"] == "head-on-stomach":
        title = (f"head on stomach: ε = {s['eps'] * 255:.3g}/255, step {s['step'] * 255:.3g}/255, {s['iters']} steps, "
                 f"top-{s['top_k']}, region {s['region']} ({report['dataset']}, {report['precision']})")
        table = Table(title=title, title_justify="left")
        for col in ("model", "attacked", "success rate", "clean acc", f"adv acc (PGD-{s['adv_iters']})",
                    "still correct", "sim clean", "sim new", "shift", "steps", "seconds"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, e in models.items():
            table.add_row(name, str(e["attacked"]), _fmt(e["success_rate"], True), _fmt(e["clean_acc"], True),
                          _fmt(e["adv_acc"], True), _fmt(e["still_correct"], True), _fmt(e["sim_clean"]),
                          _fmt(e["sim_new"]), _fmt(e["shift"]), _fmt(e["steps_success"], digits=1),
                          _fmt(e["seconds"], digits=1))
        console.print(table)
        teacher = report.get("teacher")
        if teacher and models[teacher].get("transfer"):
            t = Table(title=f"transfer: the teacher '{teacher}''s adversarial images shown to its students "
                            "(same prototype index)", title_justify="left")
            for col in ("student", "teacher moved", "student moved | teacher moved", "student moved (all)",
                        "student, random noise", "teacher, random noise"):
                t.add_column(col, justify="left" if col == "student" else "right")
            for name, e in models[teacher]["transfer"].items():
                t.add_row(name, f"{e['teacher_moved']}/{e['attacked']}", _fmt(e["transfer_rate"], True),
                          _fmt(e["student_moved"], True), _fmt(e["student_moved_random"], True),
                          _fmt(e["teacher_moved_random"], True))
            console.print(t)
    else:
        title = (f"JPEG quality {s['quality']}: clean vs compressed test images ({report['dataset']}, "
                 f"{report['precision']})")
        table = Table(title=title, title_justify="left")
        for col in ("model", "images", "acc clean", "acc JPEG", "top sim clean", "top sim JPEG", "ρ mean",
                    "ρ median", "top-1 changed", f"top-{s['top_k']} changed", f"top-{s['top_k']} overlap",
                    "location moved"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for name, e in models.items():
            table.add_row(name, str(e["images"]), _fmt(e["acc_clean"], True), _fmt(e["acc_jpeg"], True),
                          _fmt(e["top_sim_clean"]), _fmt(e["top_sim_jpeg"]), _fmt(e["rho_mean"]),
                          _fmt(e["rho_median"]), _fmt(e["top1_changed"], True), _fmt(e["topk_changed"], True),
                          _fmt(e["topk_overlap"]), _fmt(e["location_moved"], True))
        console.print(table)
    for path in report.get("figures", []):
        console.print(f"wrote {path}")
