"""What this CPU computes natively: the facts behind ``precision: auto`` and PMS's GEMM backend.

Emulated low-precision arithmetic is not a little slower but one to two orders of magnitude
slower. Measured on a 2-core AMD EPYC with AVX2 only (torch 2.14): a ResNet-18 train step at
112 px ran 17x slower under bf16 autocast than in fp32; a one-hot GEMM of PMS's shape
(8192 x 1960 by 8192 x 1960) took 0.39 s in fp32, 45 s with ``torch._int_mm`` (int8) and 108 s
in bf16. On a CPU with AMX, bf16 trains 2-3x faster than fp32 and the int8 GEMM is the fastest
of the three. So low precision is chosen only where the instructions exist.

The instructions that exist are those the kernels may use: ``ONEDNN_MAX_CPU_ISA`` (oneDNN's
convolutions and GEMMs) and ``ATEN_CPU_CAPABILITY`` (torch's own kernels) cap them below what
the CPU has — the way to run, and measure, an AVX2-only CPU's code paths on a newer one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import torch

__all__ = ["cpu_capabilities", "cpu_has_fast_int8", "cpu_has_native_bf16", "isa_capped_below"]

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that exclude each feature; "ALL"/"DEFAULT" exclude none
_ONEDNN_WITHOUT = {
    "bf16": {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"},
    "int8": {"SSE41", "AVX", "AVX2", "AVX512_CORE"},
}
# torch's kernel levels (ATEN_CPU_CAPABILITY) without AVX-512
_ATEN_BELOW_AVX512 = {"DEFAULT", "AVX2"}


def isa_capped_below(feature: str) -> bool:
    """True when the environment forbids the kernels ``feature`` (``bf16`` or ``int8``) needs:
    ``ONEDNN_MAX_CPU_ISA`` (or its old name ``DNNL_MAX_CPU_ISA``) names an ISA without it, or
    ``ATEN_CPU_CAPABILITY`` is ``default`` or ``avx2``."""
    onednn = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().upper()
    return onednn in _ONEDNN_WITHOUT[feature] or aten in _ATEN_BELOW_AVX512


@cache
def cpu_capabilities() -> Mapping[str, Any]:
    """torch's CPU feature flags (``torch.cpu.get_capabilities()``; empty where torch lacks it)."""
    probe = getattr(torch.cpu, "get_capabilities", None)
    if probe is None:  # older torch: the few flags it can tell (AMX tiles come with bf16 and int8)
        flags = {"amx_bf16": "_is_amx_tile_supported", "amx_int8": "_is_amx_tile_supported",
                 "avx512_bf16": "_is_avx512_bf16_supported", "avx512_vnni": "_is_vnni_supported"}
        return {name: bool(getattr(torch.cpu, fn, lambda: False)()) for name, fn in flags.items()}
    try:
        return dict(probe())
    except Exception:  # noqa: BLE001 - a CPU torch cannot describe: assume nothing
        return {}


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AMX (bf16 tiles) or AVX512-BF16, where bf16 autocast pays off
    (unless :func:`isa_capped_below` forbids those instructions)."""
    caps = cpu_capabilities()
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16")) and not isa_capped_below("bf16")


def cpu_has_fast_int8() -> bool:
    """True on x86 CPUs with AMX-INT8 or AVX512-VNNI, where ``torch._int_mm`` beats an fp32 GEMM
    (unless :func:`isa_capped_below` forbids those instructions)."""
    caps = cpu_capabilities()
    return bool(caps.get("amx_int8") or caps.get("avx512_vnni")) and not isa_capped_below("int8")
