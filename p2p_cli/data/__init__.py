"""Datasets: indexes (CUB, Stanford Cars, folders, synthetic), image loading, transforms, checks.

Names are re-exported lazily so that ``import p2p_cli.data.synthetic`` (or the CLI's
``--help``) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "synthetic": ("synthesize", "ensure_synthetic", "default_cache_dir", "PRESETS"),
    "index": ("DataError", "DatasetIndex", "Sample", "unwrap_worker_error"),
    "readers": ("KINDS", "load_index"),
    "images": ("ImageDataset", "file_sha256", "input_geometry", "parts_in_input"),
    "transforms": ("IMAGENET_MEAN", "IMAGENET_STD", "denormalize", "eval_transform", "BatchAugment", "normalize"),
    "check": ("CheckRow", "check_dataset"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
