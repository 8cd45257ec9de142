"""Training snapshots for ``--resume``: the training state after a step, in one safetensors file.

``RUN/checkpoints/last.safetensors`` holds the model's state dict, the objective's extra modules
(``__extra__/…``) and every optimizer's tensors (``__optim__/…``); its metadata is a loadable
model's (``model_metadata``, stage ``snapshot-<step>``) plus ``snapshot``: the number of steps
done, the metric rows so far, the last push's provenance and grid, the optimizers' JSON parts
and the fp16 grad scaler. The RNG state is not stored: every step reseeds from (seed, step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p_cli.errors import P2PError
from p2p_cli.io.checkpoint import flatten_optimizer, load_tensors, save_tensors, unflatten_optimizer
from p2p_cli.models.factory import model_metadata

_EXTRA = "__extra__/"


@dataclass
class TrainState:
    """Where training stands: ``step`` steps done, their metric rows, and the last push's
    provenance records (one per prototype) and feature grid (H, W)."""

    step: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    prototypes: list[dict[str, Any]] = field(default_factory=list)
    grid: list[int] | None = None


@dataclass
class Snapshot:
    """A snapshot read back: state dicts to load, in the order model → extra → optimizers."""

    model: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]]
    scaler: dict[str, Any] | None
    state: TrainState


def save_snapshot(path: Path, model: nn.Module, extra: nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                  scaler: torch.amp.GradScaler, state: TrainState, class_names: list[str]) -> None:
    """Atomically write the snapshot of ``state`` (after ``state.step`` steps) to ``path``."""
    tensors = dict(model.state_dict())
    tensors.update({f"{_EXTRA}{k}": v for k, v in extra.state_dict().items()})
    optim_meta = {}
    for name, opt in optimizers.items():
        t, meta = flatten_optimizer(name, opt.state_dict())
        tensors.update(t)
        optim_meta[name] = meta
    meta = model_metadata(model, stage=f"snapshot-{state.step}", class_names=class_names)
    meta["snapshot"] = {"step": state.step, "records": state.records, "prototypes": state.prototypes,
                        "grid": state.grid, "optimizers": optim_meta,
                        "scaler": scaler.state_dict() if scaler.is_enabled() else None}
    save_tensors(path, tensors, meta)


def read_snapshot(path: Path) -> Snapshot:
    """Read a snapshot written by :func:`save_snapshot` (one-line P2PError if unreadable)."""
    tensors, raw = load_tensors(path)
    try:
        snap = json.loads(raw["snapshot"])
        model_t = {k: v for k, v in tensors.items() if not k.startswith("__")}
        extra_t = {k[len(_EXTRA):]: v for k, v in tensors.items() if k.startswith(_EXTRA)}
        optimizers = {name: unflatten_optimizer(name, tensors, meta) for name, meta in snap["optimizers"].items()}
        if not isinstance(snap["step"], int) or isinstance(snap["step"], bool) or snap["step"] < 0:
            raise ValueError(f"step {snap['step']!r}")
        state = TrainState(step=snap["step"], records=list(snap["records"]), prototypes=list(snap["prototypes"]),
                           grid=snap.get("grid"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise P2PError(f"{path}: not a p2p training snapshot ({type(exc).__name__}: {exc})") from None
    return Snapshot(model_t, extra_t, optimizers, snap.get("scaler"), state)
