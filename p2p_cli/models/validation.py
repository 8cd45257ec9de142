"""Checks of an untrusted checkpoint's metadata, before anything is built from it.

A ``model.safetensors`` may come from anyone (a colleague, the Hub). Its tensors are bounded by
the file's size, but its ``model_config`` is not: ``num_classes: 1e9`` would make the builder
allocate a (10⁹, m) last layer. So the recorded config is checked first — known keys, the right
types, each value within the same bounds as the run config's keys
(:func:`p2p_cli.io.config.coerce_value`), and the decision head's size within
:data:`MAX_HEAD_ELEMENTS` — then the tensors that fix the architecture's shape (ProtoPNet's class
identity, ProtoTree's routes). Every failure is one line naming the key or tensor.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from p2p_cli.errors import P2PError
from p2p_cli.io.config import KEYS, coerce_value

MAX_CLASSES = 100_000
"""The most classes a checkpoint may record."""
MAX_HEAD_ELEMENTS = 50_000_000
"""The largest decision head (K × m last layer, or leaves × K leaf distributions): 200 MB in fp32."""

_TYPES: dict[str, type] = {"int": int, "str": str, "bool": bool}


def check_model_config(cfg_cls: type, arch: str, raw: Any, source: str | Path) -> dict[str, Any]:
    """``raw`` (the metadata's ``model_config``) as checked keyword arguments of ``cfg_cls``."""
    if not isinstance(raw, dict):
        raise P2PError(f"{source}: metadata 'model_config' is not a mapping")
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    for key in raw:
        if key not in fields:
            raise P2PError(f"{source}: unknown model_config key {key!r} for a {arch}")
    for key, fld in fields.items():
        if key not in raw and fld.default is dataclasses.MISSING:
            raise P2PError(f"{source}: model_config lacks '{key}'")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "arch":
            if value != arch:
                raise P2PError(f"{source}: model_config arch {value!r} differs from the metadata's {arch!r}")
        elif key == "num_classes":
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_CLASSES:
                raise P2PError(f"{source}: model_config num_classes must be an integer in [2, {MAX_CLASSES}], "
                               f"got {value!r}")
        elif value is not None:
            want = _TYPES.get(str(fields[key].type).split(" | ")[0])
            if want is not None and type(value) is not want:
                raise P2PError(f"{source}: model_config {key} must be {want.__name__}, got {value!r}")
            if key in KEYS:
                try:
                    coerce_value(key, value)
                except P2PError as exc:
                    raise P2PError(f"{source}: model_config: {exc}") from None
        out[key] = value
    return out


def check_structure(arch: str, config: dict[str, Any], tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """The tensors that fix the shape agree with the config, and the head stays within
    :data:`MAX_HEAD_ELEMENTS`: ProtoPNet's ``class_identity`` (m, K) floats, ProtoTree's
    ``routes`` (L, L − 1) for L leaves."""
    k = int(config["num_classes"])
    if arch == "protopnet":
        ci = tensors.get("class_identity")
        m = int(ci.shape[0]) if ci is not None and ci.dim() == 2 else k * int(config.get("prototypes_per_class", 10))
        if ci is not None and (ci.dim() != 2 or ci.shape[1] != k or not ci.is_floating_point()):
            raise P2PError(f"{source}: tensor 'class_identity' has shape {tuple(ci.shape)} and dtype "
                           f"{str(ci.dtype).removeprefix('torch.')}, the architecture expects (m, {k}) floats")
        head = k * m
    elif arch == "prototree":
        routes = tensors.get("routes")
        leaves = 2 ** int(config.get("depth") or 1)
        if routes is not None:
            if routes.dim() != 2 or routes.shape[1] != routes.shape[0] - 1:
                raise P2PError(f"{source}: tensor 'routes' has shape {tuple(routes.shape)}, the architecture "
                               "expects (L, L − 1)")
            leaves = int(routes.shape[0])
        head = leaves * k
    else:
        return
    if head > MAX_HEAD_ELEMENTS:
        raise P2PError(f"{source}: the recorded architecture's decision head would hold {head:,} weights "
                       f"(at most {MAX_HEAD_ELEMENTS:,}); not a checkpoint p2p wrote")
