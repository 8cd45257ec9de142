"""A finished run, loaded: the one object every command that reads runs works with.

``load_run(ref, workdir)`` resolves a model reference (a run directory, its
``model.safetensors``, or a run name inside the workdir), loads the weights with the
architecture recorded in their metadata, and reads what the run says about itself
(``config.yaml``, ``prototypes.json``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from p2p_cli.errors import P2PError
from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.io.config import TrainConfig, config_from_dict
from p2p_cli.io.rundir import RunDir, resolve_ref
from p2p_cli.models.factory import load_model
from p2p_cli.models.protopnet import PrototypeNetwork

if TYPE_CHECKING:
    from p2p_cli.data.index import DatasetIndex

RUN_DATASET_HINT = "pass the run's dataset with --dataset/--data-root"


@dataclass
class LoadedRun:
    """A trained model with its run's records.

    Attributes:
        name: the row label (the run directory's name unless renamed, e.g. ``name#2``).
        run: the run directory.
        model: the network, in eval mode (on the CPU until :meth:`to`).
        meta: the metadata stored in ``model.safetensors`` (arch, class names, teacher, …).
        config: the run's resolved ``config.yaml`` (None when the run has none).
        config_raw: ``config.yaml`` as written, including bookkeeping keys (command, teacher_run, …).
        prototypes: ``prototypes.json`` records, one per prototype (None when absent or stale).
        grid: the ``(H, W)`` feature grid recorded by the push (None when absent).
        role: ``model``, ``teacher``, ``baseline`` or ``student`` (set by whoever compares runs).
    """

    name: str
    run: RunDir
    model: PrototypeNetwork
    meta: dict[str, Any]
    config: TrainConfig | None
    config_raw: dict[str, Any] = field(default_factory=dict)
    prototypes: list[dict[str, Any]] | None = None
    grid: tuple[int, int] | None = None
    role: str = "model"

    @functools.cached_property
    def weights(self) -> str:
        """Content hash of the weights (:func:`~p2p_cli.io.checkpoint.weights_hash`)."""
        return weights_hash(self.model.state_dict())

    @property
    def arch(self) -> str:
        return str(self.meta.get("arch") or self.model.arch)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.meta.get("class_names") or []]

    @property
    def image_size(self) -> int:
        return int(self.config.image_size) if self.config else 224

    @property
    def crop_bbox(self) -> bool:
        return bool(self.config.crop_bbox) if self.config else False

    @property
    def method(self) -> str | None:
        """The distillation method of a student (``none`` for a baseline), None for a run of train-teacher."""
        if self.config_raw.get("command") == "distill" or "teacher" in self.meta:
            return str(self.meta.get("method") or self.config_raw.get("method") or "proto2proto")
        return None

    @property
    def recorded_teacher(self) -> dict[str, Any] | None:
        """``{name, path, weights_hash, backbone}`` of the teacher a student was distilled from."""
        rec = self.config_raw.get("teacher_run") or self.meta.get("teacher")
        return rec if isinstance(rec, dict) else None

    @property
    def label(self) -> str:
        """``name (backbone[, method])`` for titles."""
        method = self.meta.get("method")
        extra = f", {method}" if method and self.meta.get("teacher") else ""
        return f"{self.name} ({self.model.config.backbone}{extra})"

    def record(self, j: int) -> dict[str, Any] | None:
        """Prototype ``j``'s provenance record, or None."""
        if self.prototypes is None or j >= len(self.prototypes):
            return None
        rec = self.prototypes[j]
        return rec if rec.get("prototype", j) == j else None

    def check_classes(self, index: DatasetIndex, hint: str = RUN_DATASET_HINT) -> None:
        """A one-line :class:`~p2p_cli.errors.P2PError` (ending in ``hint``) unless the run was trained
        on ``index``'s classes: the same names in the same order (or, without recorded names, as many)."""
        names, n = self.classes, self.model.config.num_classes
        if (names or index.classes) == index.classes and n == index.num_classes:
            return

        def shown(classes: list[str]) -> str:
            return f" ({', '.join(classes[:3])}{', …' if len(classes) > 3 else ''})" if classes else ""

        raise P2PError(f"'{self.name}' was trained on {n} classes{shown(names)} but {index.name} at {index.root} "
                       f"has {index.num_classes}{shown(index.classes)}; {hint}")

    def to(self, device: torch.device, *, channels_last: bool = False, frozen: bool = True) -> LoadedRun:
        """Move the model to ``device`` in eval mode (backbone channels_last if asked); with
        ``frozen`` no parameter requires grad. Returns self."""
        self.model.to(device).eval()
        if channels_last:
            self.model.backbone.to(memory_format=torch.channels_last)
        if frozen:
            self.model.requires_grad_(False)
        return self


def read_prototypes(run: RunDir, num_prototypes: int) -> tuple[list[dict[str, Any]] | None, tuple[int, int] | None]:
    """``prototypes.json`` of ``run``: (records, grid). Records that do not match the model's
    ``num_prototypes`` (stale provenance) are dropped: no patches rather than wrong ones."""
    if not run.prototypes_path.is_file():
        return None, None
    try:
        doc = json.loads(run.prototypes_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise P2PError(f"{run.prototypes_path}: not valid JSON (re-create it with p2p push-prototypes)") from None
    if not isinstance(doc, dict):
        return None, None
    records = doc.get("prototypes")
    grid = tuple(int(v) for v in doc["grid"]) if doc.get("grid") else None
    if not isinstance(records, list) or len(records) != num_prototypes:
        records = None
    return records, grid  # type: ignore[return-value]


def load_run(ref: str | Path, workdir: str | Path = "runs", *, provenance: bool = True) -> LoadedRun:
    """Load the finished run ``ref`` (a run directory, its ``model.safetensors``, or a run name
    inside ``workdir``). One-line :class:`~p2p_cli.errors.P2PError` when it cannot be found or read.
    With ``provenance=False`` ``prototypes.json`` is not read (``p2p push-prototypes`` rewrites it).

    Example::

        from p2p_cli.models.runs import load_run
        teacher = load_run("teacher", workdir="runs")
        print(teacher.model.num_prototypes, teacher.classes[:3])
    """
    run = resolve_ref(ref, Path(workdir))
    return load_run_dir(run, provenance=provenance)


def load_run_dir(run: RunDir, *, provenance: bool = True) -> LoadedRun:
    """:func:`load_run` for an already resolved run directory."""
    model, meta = load_model(run.model_path)
    raw: dict[str, Any] = {}
    cfg = None
    if run.config_path.is_file():
        raw = run.read_config()
        cfg = config_from_dict(raw, source=str(run.config_path))
    classes = meta.get("class_names") or []
    if classes and len(classes) != model.config.num_classes:
        raise P2PError(f"{run.model_path}: records {len(classes)} class names for {model.config.num_classes} classes")
    records, grid = read_prototypes(run, model.num_prototypes) if provenance else (None, None)
    return LoadedRun(run.name, run, model, meta, cfg, raw, records, grid)
