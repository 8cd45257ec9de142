"""Build a model from a run config, save it with its architecture, and load it back.

The architecture registry ``ARCHITECTURES`` maps a model class's ``arch`` (``protopnet``,
``prototree``) to (model class, config class); building, saving and loading all go through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

import p2p_cli
from p2p_cli.errors import P2PError
from p2p_cli.io.checkpoint import decode_metadata, load_tensors, save_tensors, split_model_tensors
from p2p_cli.io.config import TrainConfig
from p2p_cli.models.backbones import load_backbone_weights
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig, PrototypeNetwork
from p2p_cli.models.prototree import ProtoTree, ProtoTreeConfig
from p2p_cli.runtime.device import Runtime

ARCHITECTURES: dict[str, tuple[type[PrototypeNetwork], type]] = {
    cls.arch: (cls, cfg_cls) for cls, cfg_cls in ((ProtoPNet, ProtoPNetConfig), (ProtoTree, ProtoTreeConfig))
}


def build_model(cfg: TrainConfig, num_classes: int, rt: Runtime, *, backbone: str | None = None) -> PrototypeNetwork:
    """A fresh network of architecture ``cfg.arch`` for ``num_classes`` classes, on ``rt.device``.

    Weights: timm's ImageNet ones (``pretrained``), a local backbone file or an installed
    weights package (``weights``, :func:`~p2p_cli.models.backbones.resolve_weights`), or random.
    ``backbone`` overrides ``cfg.backbone``. The backbone is put in channels_last when
    the runtime asks for it, and compiled with ``compile``.
    """
    if cfg.arch not in ARCHITECTURES:
        raise P2PError(f"unsupported architecture {cfg.arch!r} (choose {', '.join(ARCHITECTURES)})")
    cls, cfg_cls = ARCHITECTURES[cfg.arch]
    model = cls(cfg_cls.from_train_config(cfg, num_classes, backbone), pretrained=cfg.pretrained)
    if cfg.weights:
        load_backbone_weights(model.backbone, cfg.weights)
    model.to(rt.device)
    if rt.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]
    return model


def model_metadata(model: ProtoPNet, *, stage: str, class_names: list[str], extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": "p2p-model",
        "arch": model.arch,
        "stage": stage,
        "p2p_version": p2p_cli.__version__,
        "model_config": model.config.to_dict(),
        "class_names": class_names,
        "num_prototypes": model.num_prototypes,
    }
    meta.update(extra or {})
    return meta


def save_model(path: Path, model: ProtoPNet, *, stage: str, class_names: list[str],
               extra: dict[str, Any] | None = None) -> None:
    save_tensors(path, model.state_dict(), model_metadata(model, stage=stage, class_names=class_names, extra=extra))


def build_from_metadata(meta: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> ProtoPNet:
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        raise P2PError(f"unsupported architecture {arch!r} in checkpoint")
    cls, cfg_cls = ARCHITECTURES[arch]
    config = cfg_cls(**meta["model_config"])
    return cls(config, **cls.structure_from(tensors))


class NoMetaInit(TorchFunctionMode):
    """Skip the in-place initialisers (``normal_``, ``uniform_``, ``fill_``, ``zero_``) on meta
    tensors: they have no values to set, yet on the meta device ``normal_`` runs through Python
    reference decompositions (~1 ms per conv; half the time of building a ResNet-34 skeleton)."""

    _SKIPPED = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_})

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in self._SKIPPED and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _skeleton(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ProtoPNet | None:
    """The architecture built on the ``meta`` device (no memory, no weight init — seconds saved
    for VGG), or None if this architecture cannot be built there."""
    try:
        with torch.device("meta"), NoMetaInit():
            return build_from_metadata(meta, tensors)
    except P2PError:
        raise
    except Exception:  # noqa: BLE001 - some timm models compute values at init; fall back
        return None


def load_model(path: Path) -> tuple[ProtoPNet, dict[str, Any]]:
    """Load a model file (or a training snapshot) written by p2p; returns (model in eval mode, metadata)."""
    tensors, raw = load_tensors(path)
    meta = decode_metadata(raw)
    if meta.get("format") != "p2p-model":
        raise P2PError(f"{path}: a safetensors file, but not a p2p model (no p2p metadata)")
    tensors = split_model_tensors(tensors)
    model = _skeleton(meta, tensors)
    if model is not None:  # no random init: every parameter and buffer comes from the file
        missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
        if not missing and any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            model = None  # a tensor outside the state dict: build normally
    if model is None:
        model = build_from_metadata(meta, tensors)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise P2PError(f"{path}: weights do not fit the recorded architecture ({what})")
    model.eval()
    return model, meta
