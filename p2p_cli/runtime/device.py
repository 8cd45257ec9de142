"""Where and how computation runs: the device, the autocast precision, the process's rank."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import torch

from p2p_cli.errors import P2PError, P2PWarning
from p2p_cli.runtime.distributed import init_distributed
from p2p_cli.runtime.hardware import cpu_has_native_bf16
from p2p_cli.runtime.threads import configure_threads


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the backbone; the prototype layer switches it off itself (fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; explicit names are checked. ``cuda``
    without an index is ``cuda:LOCAL_RANK`` (one GPU per torchrun process; 0 without torchrun)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise P2PError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise P2PError(f"device '{name}' requested but CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise P2PError("device 'mps' requested but MPS is not available on this machine")
    if device.type == "cuda" and device.index is None:  # under torchrun: this process's own GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The backbone's autocast dtype (None = fp32) for ``auto|bf16|fp16|fp32``.

    ``auto`` → bf16 on a CUDA GPU that supports it (else fp16), bf16 on a CPU with native bf16
    (:func:`~p2p_cli.runtime.hardware.cpu_has_native_bf16`, 2-3× faster than fp32 there), fp32 on every
    other CPU and on MPS. An explicit ``bf16`` is honoured everywhere, with a warning on a CPU
    that can only emulate it.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise P2PError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        return torch.float16
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("precision bf16 on a CPU without AMX or AVX512-BF16 is emulated: 5-17× slower than fp32 "
                          "(measured); --precision auto picks fp32 here", P2PWarning, stacklevel=2)
        return torch.bfloat16
    if precision != "auto":
        raise P2PError(f"unknown precision '{precision}' (auto, bf16, fp16 or fp32)")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def make_runtime(device_name: str, precision: str, channels_last: bool) -> Runtime:
    """The runtime of a command; also sets torch's CPU thread count (:func:`configure_threads`)."""
    configure_threads()
    device = resolve_device(device_name)
    rank, world = init_distributed(device)
    return Runtime(device=device, amp_dtype=resolve_precision(precision, device),
                   channels_last=channels_last, rank=rank, world_size=world)
