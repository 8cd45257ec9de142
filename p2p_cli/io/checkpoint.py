"""Checkpoints: tensors in safetensors, everything else in JSON — never pickle.

``model.safetensors`` carries string metadata (arch, stage, class names, p2p version, the
model config as JSON). Training snapshots add the optimizer states (tensors flattened into
the safetensors file, the rest as JSON in its metadata) for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write

_OPT_PREFIX = "__optim__"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Atomically write ``tensors`` with JSON-encoded ``metadata`` values (non-str are JSON-dumped)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    try:
        atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=meta))
    except SafetensorError as exc:  # an I/O failure inside the Rust writer (disk full, …): an OSError
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a pickle, a truncated or a foreign file is a one-line P2PError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise P2PError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        head = path.read_bytes()[:2]
        kind = "a pickle (p2p never unpickles)" if head[:1] == b"\x80" or head == b"PK" else "truncated or corrupt"
        raise P2PError(f"{path}: not a readable safetensors checkpoint — {kind} ({exc})") from None
    return tensors, metadata


def flatten_optimizer(name: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and a JSON part."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPT_PREFIX}/{name}/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{_OPT_PREFIX}/{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix):].split("/", 1)
            state.setdefault(int(pid), {})[field] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def split_model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own tensors of a snapshot (drops optimizer entries)."""
    return {k: v for k, v in tensors.items() if not k.startswith(_OPT_PREFIX)}


def weights_hash(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes and bytes), hex sha256[:16]."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's own bytes, no copy
    return h.hexdigest()[:16]


def decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """JSON-decode the metadata values written by :func:`save_tensors` (plain strings stay strings)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a safetensors file, from its header only (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return decode_metadata(dict(fh.metadata() or {}))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        raise P2PError(f"{path}: not a readable safetensors checkpoint") from None


def check_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str | Path) -> None:
    """A one-line P2PError naming the first tensor of ``found`` (a file's) whose name, shape or dtype
    differs from ``expected`` (an architecture's state dict, possibly on the meta device): missing,
    unexpected, a wrong shape or a wrong dtype, with what was expected and what was found."""
    for name, want in expected.items():
        if name not in found:
            raise P2PError(f"{source}: tensor '{name}' is missing (the architecture expects shape "
                           f"{tuple(want.shape)})")
    for name, got in found.items():
        want = expected.get(name)
        if want is None:
            raise P2PError(f"{source}: unexpected tensor '{name}' (shape {tuple(got.shape)}) for the recorded "
                           "architecture")
        if tuple(got.shape) != tuple(want.shape):
            raise P2PError(f"{source}: tensor '{name}' has shape {tuple(got.shape)}, the architecture expects "
                           f"{tuple(want.shape)}")
        if got.dtype != want.dtype:
            raise P2PError(f"{source}: tensor '{name}' has dtype {str(got.dtype).removeprefix('torch.')}, the "
                           f"architecture expects {str(want.dtype).removeprefix('torch.')}")
