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
from p2p_cli.io.checkpoint import check_tensors, decode_metadata, load_tensors, save_tensors, split_model_tensors
from p2p_cli.io.config import TrainConfig
from p2p_cli.models.backbones import load_backbone_weights
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig, PrototypeNetwork
from p2p_cli.models.prototree import ProtoTree, ProtoTreeConfig
from p2p_cli.models.validation import check_model_config, check_structure
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
    state = model.state_dict()
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # a NaN model never becomes a finished run
        raise P2PError(f"{path}: not saved: tensor '{bad}' holds NaN/inf (training diverged; lower the learning rates)")
    save_tensors(path, state, model_metadata(model, stage=stage, class_names=class_names, extra=extra))


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


def check_checkpoint(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """Validate an untrusted checkpoint's metadata before anything is built from it: a p2p model,
    a known architecture, a sane ``model_config`` and shape-fixing tensors that agree with it
    (:mod:`p2p_cli.models.validation`), recorded class names as strings. One line per problem."""
    if meta.get("format") != "p2p-model":
        raise P2PError(f"{path}: a safetensors file, but not a p2p model (no p2p metadata)")
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        raise P2PError(f"{path}: unsupported architecture {arch!r} in checkpoint (choose {', '.join(ARCHITECTURES)})")
    config = check_model_config(ARCHITECTURES[arch][1], arch, meta.get("model_config"), path)
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise P2PError(f"{path}: metadata 'class_names' is not a list of strings")
    check_structure(arch, config, tensors, path)


def load_model(path: Path) -> tuple[ProtoPNet, dict[str, Any]]:
    """Load a model file (or a training snapshot) written by p2p; returns (model in eval mode, metadata).

    The file is untrusted: its metadata is checked first (:func:`check_checkpoint`), then every
    tensor's name, shape and dtype against the architecture (built without memory on the meta
    device), each mismatch a one-line P2PError naming the tensor."""
    tensors, raw = load_tensors(path)
    meta = decode_metadata(raw)
    tensors = split_model_tensors(tensors)
    check_checkpoint(meta, tensors, path)
    model = _skeleton(meta, tensors)
    if model is not None:  # no random init: every parameter and buffer comes from the file
        check_tensors(model.state_dict(), tensors, path)
        model.load_state_dict(tensors, strict=True, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            model = None  # a tensor outside the state dict: build normally
    if model is None:
        try:
            model = build_from_metadata(meta, tensors)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise P2PError(f"{path}: the recorded architecture cannot be built ({str(exc).splitlines()[0]})") from None
        check_tensors(model.state_dict(), tensors, path)
        model.load_state_dict(tensors, strict=True)
    model.eval()
    return model, meta
