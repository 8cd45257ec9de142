"""The reproducibility record of a run: ``environment.json``.

Callers write it with ``atomic_write_json(run.path / ENVIRONMENT_JSON, environment_record(rt, sys.argv))``.

What produced the numbers: p2p's version and git commit (when p2p runs from a git checkout),
Python, torch, torchvision and timm versions, the device and autocast precision, the CPU flags
that decide ``precision: auto`` (:mod:`p2p_cli.runtime.hardware`), thread counts, the
torch.distributed world size and the full command line.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import p2p_cli
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.hardware import cpu_capabilities, cpu_has_fast_int8, cpu_has_native_bf16

ENVIRONMENT_JSON = "environment.json"
PRECISION_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512", "avx2")
"""CPU flags recorded: the ones behind the bf16 and int8 choices, and the vector width."""
PACKAGES = ("torch", "torchvision", "timm", "numpy", "safetensors", "huggingface_hub")


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@cache
def git_commit(path: str | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (default: p2p's source), or
    None when it is not in a git work tree or git is missing."""
    where = path or str(Path(p2p_cli.__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def device_record(rt: Runtime) -> dict[str, Any]:
    """Device, precision and what the device is."""
    out: dict[str, Any] = {"device": str(rt.device), "precision": _precision_name(rt.amp_dtype),
                           "channels_last": rt.channels_last}
    if rt.device.type == "cuda":
        index = rt.device.index if rt.device.index is not None else torch.cuda.current_device()
        out["cuda"] = {"name": torch.cuda.get_device_name(index),
                       "capability": list(torch.cuda.get_device_capability(index)),
                       "cuda_version": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return out


def cpu_record() -> dict[str, Any]:
    """The CPU: processor, the precision-relevant flags torch reports, and what they decided."""
    caps = cpu_capabilities()
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "cores": os.cpu_count(),
            "flags": {k: bool(caps[k]) for k in PRECISION_FLAGS if k in caps},
            "native_bf16": cpu_has_native_bf16(), "fast_int8": cpu_has_fast_int8()}


def environment_record(rt: Runtime, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The reproducibility record of a run (written as ``environment.json``).

    Args:
        rt: the run's runtime (device, precision, rank, world size).
        argv: the full command line (default ``sys.argv``); recorded as a list and as a
            shell-quoted string that can be pasted back into a shell.
    """
    args = [str(a) for a in (sys.argv if argv is None else argv)]
    return {
        "p2p": {"version": p2p_cli.__version__, "git": git_commit()},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": {name: package_version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "runtime": device_record(rt),
        "cpu": cpu_record(),
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "distributed": {"world_size": rt.world_size, "rank": rt.rank},
        "command": {"argv": args, "line": shlex.join(args), "cwd": os.getcwd()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

