"""CPU capabilities → precision ``auto`` and the PMS GEMM backend; the one-line CLI warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from p2p_cli.cli import app as cli_app
from p2p_cli.errors import P2PError, P2PWarning
from p2p_cli.metrics import cooccurrence_gemm
from p2p_cli.runtime import hardware
from p2p_cli.runtime.device import resolve_precision

CPU = torch.device("cpu")
AMX = {"avx2": True, "avx512_f": True, "avx512_vnni": True, "avx512_bf16": True, "amx_tile": True,
       "amx_bf16": True, "amx_int8": True}
AVX2_ONLY = {"avx": True, "avx2": True, "fma3": True, "avx512_f": False, "avx512_bf16": False,
             "amx_bf16": False, "amx_int8": False, "avx512_vnni": False}


@pytest.fixture(autouse=True)
def uncapped_isa(monkeypatch):
    """No ISA cap from the environment unless a test sets one."""
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def cpu_caps(monkeypatch):
    """Pretend to be a CPU with the given capability flags."""

    def use(caps: dict[str, bool]) -> None:
        monkeypatch.setattr(hardware, "cpu_capabilities", lambda: caps)

    return use


@pytest.mark.parametrize(("caps", "bf16", "int8"), [
    (AMX, True, True),
    (AVX2_ONLY, False, False),
    ({"avx512_bf16": True}, True, False),  # each flag decides on its own: bf16 without VNNI
    ({"avx512_vnni": True}, False, True),  # Cascade Lake: VNNI, no bf16
    ({}, False, False),  # nothing known: assume nothing
])
def test_capability_flags(cpu_caps, caps, bf16, int8):
    cpu_caps(caps)
    assert hardware.cpu_has_native_bf16() is bf16
    assert hardware.cpu_has_fast_int8() is int8


@pytest.mark.parametrize(("var", "value", "bf16", "int8"), [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False, False),  # how an AVX2-only CPU is emulated on a newer one
    ("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni", False, True),  # Cascade Lake's ISA: VNNI, no bf16
    ("DNNL_MAX_CPU_ISA", "AVX512_CORE", False, False),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True, True),
    ("ONEDNN_MAX_CPU_ISA", "ALL", True, True),
    ("ATEN_CPU_CAPABILITY", "avx2", False, False),
    ("ATEN_CPU_CAPABILITY", "avx512", True, True),
])
def test_an_isa_cap_in_the_environment_hides_what_the_cpu_has(cpu_caps, monkeypatch, var, value, bf16, int8):
    cpu_caps(AMX)
    monkeypatch.setenv(var, value)
    assert hardware.cpu_has_native_bf16() is bf16
    assert hardware.cpu_has_fast_int8() is int8
    assert (resolve_precision("auto", CPU) is torch.bfloat16) is bf16


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(cpu_caps):
    cpu_caps(AMX)
    assert resolve_precision("auto", CPU) is torch.bfloat16
    cpu_caps(AVX2_ONLY)
    assert resolve_precision("auto", CPU) is None  # fp32: emulated bf16 is 5-17x slower
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("auto", torch.device("mps")) is None


def test_explicit_bf16_is_honoured_with_a_warning_on_an_emulating_cpu(cpu_caps):
    cpu_caps(AVX2_ONLY)
    with pytest.warns(P2PWarning, match="emulated"):
        assert resolve_precision("bf16", CPU) is torch.bfloat16
    cpu_caps(AMX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", CPU) is torch.bfloat16


def test_precision_errors():
    with pytest.raises(P2PError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(P2PError, match="unknown precision 'bf61'"):
        resolve_precision("bf61", CPU)


def test_pms_backend_auto_avoids_emulated_int8(cpu_caps, monkeypatch):
    chosen: list[str] = []
    real = cooccurrence_gemm._cooccurrence_gemm

    def spy(code_t, code_s, n_shared, backend):
        chosen.append(backend)
        return real(code_t, code_s, n_shared, backend)

    monkeypatch.setattr(cooccurrence_gemm, "_cooccurrence_gemm", spy)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (30, 5)), rng.integers(0, 4, (30, 6))
    cpu_caps(AVX2_ONLY)
    slow = cooccurrence_gemm.cooccurrence(a, b, 4)
    assert chosen == ["fp32"]
    cpu_caps(AMX)
    fast = cooccurrence_gemm.cooccurrence(a, b, 4)
    assert chosen[1] == ("int8" if hasattr(torch, "_int_mm") else "fp32")
    expected = (a[:, :, None] == b[:, None, :]).sum(axis=0)
    assert np.array_equal(slow, expected) and np.array_equal(fast, expected)


def test_cli_prints_our_warnings_as_one_line(capsys):
    cli_app.show_warning(P2PWarning("precision bf16 … is emulated"), P2PWarning, "x.py", 3)
    assert capsys.readouterr().err == "warning: precision bf16 … is emulated\n"
