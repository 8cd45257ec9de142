"""KD baselines (hint, RKD, logit KD) and the distillation-method registry."""

from __future__ import annotations

import math

import pytest
import torch

from p2p_cli.errors import P2PError
from p2p_cli.losses.kd import HintRegressor, hint_loss, kd_loss, rkd_angle_loss, rkd_distance_loss, rkd_loss
from p2p_cli.losses.registry import DistillMethod, get_method, list_methods, register_method

# ---------------------------------------------------------------- hint


def test_hint_regressor_is_conv1x1_then_relu_hand() -> None:
    # C_s = 2 → C_t = 2 with W = [[1, 0], [1, -1]], b = [0, -1]; one cell v = (3, 1):
    #   conv = (3 + 0, 3 − 1 − 1) = (3, 1) → ReLU (3, 1);  v = (1, 4): (1, 1 − 4 − 1 = −4) → ReLU (1, 0)
    reg = HintRegressor(2, 2)
    with torch.no_grad():
        reg.conv.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]])[:, :, None, None])
        reg.conv.bias.copy_(torch.tensor([0.0, -1.0]))
    v = torch.tensor([[[[3.0, 1.0]], [[1.0, 4.0]]]])  # (1, 2, 1, 2): cells (3, 1) and (1, 4)
    r = reg(v)
    torch.testing.assert_close(r, torch.tensor([[[[3.0, 1.0]], [[1.0, 0.0]]]]))
    # teacher backbone u = [[2, 1], [1, 2]] per channel → squared errors (1, 0, 0, 4) → mean 5/4 = 1.25
    u = torch.tensor([[[[2.0, 1.0]], [[1.0, 2.0]]]])
    assert hint_loss(r, u).item() == pytest.approx(1.25)
    assert hint_loss(u, u).item() == 0.0


def test_hint_regressor_maps_channels_and_trains() -> None:
    reg = HintRegressor(3, 5)
    v = torch.rand(2, 3, 4, 4, requires_grad=True)
    r = reg(v.bfloat16())  # a backbone output under bf16 autocast is accepted (computed in fp32)
    assert r.shape == (2, 5, 4, 4) and r.dtype == torch.float32 and bool((r >= 0).all())
    hint_loss(reg(v), torch.rand(2, 5, 4, 4)).backward()
    assert reg.conv.weight.grad is not None and v.grad is not None
    with pytest.raises(P2PError, match="same H×W"):
        hint_loss(reg(v), torch.rand(2, 5, 2, 2))


# ---------------------------------------------------------------- RKD


def test_rkd_distance_golden_collinear() -> None:
    # 1-D points t = 0, 1, 2: d01 = 1, d02 = 2, d12 = 1; μ = 4/3 → 0.75, 1.5, 0.75
    #          s = 0, 1, 3: d01 = 1, d02 = 3, d12 = 2; μ = 2   → 0.5,  1.5, 1.0
    # |diff| = 0.25, 0, 0.25 → smooth-L1 0.5·0.0625 = 0.03125 each, every pair twice in the 3×3 matrix:
    # RKD-D = 4·0.03125 / 9 = 0.125/9 = 0.0138889
    # RKD-A = 0: collinear points in the same order have the same angle cosines (±1)
    t = torch.tensor([[0.0], [1.0], [2.0]])
    s = torch.tensor([[0.0], [1.0], [3.0]])
    assert rkd_distance_loss(s, t).item() == pytest.approx(0.125 / 9.0, rel=1e-6)
    assert rkd_angle_loss(s, t).item() == pytest.approx(0.0, abs=1e-7)
    # default weights: 25·0.0138889 + 50·0 = 0.3472222
    assert rkd_loss(s, t).item() == pytest.approx(25.0 * 0.125 / 9.0, rel=1e-6)


def test_rkd_golden_triangle() -> None:
    # t = (0,0), (1,0), (0,1): angles' cosines at vertices 0, 1, 2 = 0, √2/2, √2/2
    # s = (0,0), (1,0), (1,1): cosines = √2/2, 0, √2/2
    # |Δcos| = √2/2, √2/2, 0 → smooth-L1 0.5·(1/2) = 0.25, 0.25, 0; each vertex's angle appears twice
    # (ordered (i, k)) among the 3³ = 27 entries → RKD-A = 2·0.5 / 27 = 1/27 = 0.0370370
    # distances t: d01 = 1, d02 = 1, d12 = √2; s: d01 = 1, d02 = √2, d12 = 1; both μ = (2 + √2)/3
    # |Δ| on d02 and d12 = (√2 − 1)/μ = 0.3639610; smooth-L1 = 0.5·0.1324676; four entries / 9:
    # RKD-D = 2·0.1324676/9 = 17 − 12√2 = 0.0294373
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    rkd_d = 17.0 - 12.0 * math.sqrt(2.0)
    assert rkd_angle_loss(s, t).item() == pytest.approx(1.0 / 27.0, rel=1e-5)
    assert rkd_distance_loss(s, t).item() == pytest.approx(rkd_d, rel=1e-5)
    # total 25·0.0294373 + 50·0.0370370 = 0.7359313 + 1.8518519 = 2.5877832
    assert rkd_loss(s, t).item() == pytest.approx(25.0 * rkd_d + 50.0 / 27.0, rel=1e-5)
    assert rkd_loss(s, t, w_distance=0.0, w_angle=1.0).item() == pytest.approx(1.0 / 27.0, rel=1e-5)


def test_rkd_zero_for_identical_and_scale_invariant() -> None:
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(6, 5, generator=g)
    assert rkd_loss(emb, emb).item() == pytest.approx(0.0, abs=1e-6)
    # scaling (and translating) an embedding changes nothing: distances are mean-normalised
    assert rkd_loss(3.7 * emb + 1.0, emb).item() == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(6, 8, generator=g)  # E may differ between student and teacher
    base = rkd_loss(other, emb).item()
    assert base > 0.0
    assert rkd_loss(0.01 * other, emb).item() == pytest.approx(base, rel=1e-4)


def test_rkd_gradients_finite_with_duplicate_points() -> None:
    emb_s = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    emb_t = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    rkd_loss(emb_s, emb_t).backward()
    assert emb_s.grad is not None and torch.isfinite(emb_s.grad).all()


# ---------------------------------------------------------------- logit KD


def test_kd_loss_golden() -> None:
    # T = 2. Row 0: teacher [0, 0] → p = [1/2, 1/2]; student [ln 3, 0]/2 → q = [√3, 1]/(√3 + 1)
    # KL(p‖q) = ½ ln(½/q0) + ½ ln(½/q1) = ½ ln(¼ / (q0 q1)) = ½ ln((4 + 2√3)/(4√3)) = ½ ln((2 + √3)/(2√3))
    #        = ½ · 0.0745046 ; × T² = 4 → 2 · 0.0745046 = 0.1490091
    # Row 1: identical logits → 0. Batch mean → 0.1490091 / 2 = 0.0745046 = ln((2 + √3)/(2√3))
    s = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = math.log((2.0 + math.sqrt(3.0)) / (2.0 * math.sqrt(3.0)))
    assert kd_loss(s, t, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)
    # T = 1, row 0 only: ½ ln(4/3) = 0.1438410
    assert kd_loss(s[:1], t[:1], temperature=1.0).item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-5)


def test_kd_loss_zero_for_identical_logits() -> None:
    z = torch.randn(4, 7, requires_grad=True)
    loss = kd_loss(z, z.detach().clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.allclose(z.grad, torch.zeros_like(z), atol=1e-6)


def test_kd_loss_bad_inputs() -> None:
    with pytest.raises(P2PError):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(P2PError):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


# ---------------------------------------------------------------- registry


def _outputs(seed: int, d: int = 2, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {
        "logits": torch.randn(3, 4, generator=g),
        "distances": torch.rand(3, 5, 2, 2, generator=g) * 3,
        "features": torch.rand(3, d, 2, 2, generator=g),
        "prototypes": torch.rand(5, d, 1, 1, generator=g),
        "backbone": torch.rand(3, d, 2, 2, generator=g),
    }
    out["min_distances"] = out["distances"].amin(dim=(2, 3))
    if requires_grad:
        out = {k: v.requires_grad_(True) for k, v in out.items()}
    return out


def test_registry_lists_all_methods() -> None:
    assert list_methods() == ["hint", "kd", "none", "proto2proto", "rkd"]
    assert get_method("none").needs_teacher is False
    assert all(get_method(n).needs_teacher for n in ["hint", "kd", "proto2proto", "rkd"])
    assert get_method("kd") is not get_method("kd")  # fresh instance per call


def test_registry_unknown_name() -> None:
    with pytest.raises(P2PError, match=r"unknown distillation method 'rdk'.*did you mean 'rkd'"):
        get_method("rdk")
    with pytest.raises(P2PError, match="available: hint, kd, none, proto2proto, rkd"):
        get_method("fitnets")


def test_registry_duplicate_registration() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_method("kd")
        class _Dup(DistillMethod):
            pass


def test_proto2proto_keys_follow_fidelity() -> None:
    m = get_method("proto2proto")
    assert m.teacher_keys({"fidelity": "paper"}) == {"features", "prototypes", "distances"}
    assert m.student_keys({"fidelity": "paper"}) == {"features", "prototypes"}
    assert m.teacher_keys({"fidelity": "reference"}) == {"features", "prototypes"}
    assert m.student_keys({"fidelity": "reference"}) == {"features", "prototypes", "distances"}
    with pytest.raises(P2PError, match="teacher D = 4, student D = 2"):
        m.make_modules(2, 4)


@pytest.mark.parametrize(
    ("name", "terms"),
    [
        ("proto2proto", {"ppc", "global"}),
        ("hint", {"hint"}),
        ("rkd", {"rkd_distance", "rkd_angle"}),
        ("kd", {"kd"}),
        ("none", set()),
    ],
)
def test_every_method_computes_with_inference_mode_teacher(name: str, terms: set[str]) -> None:
    method = get_method(name)
    modules = method.make_modules(2, 2)
    with torch.inference_mode():
        teacher = _outputs(0)
    student = _outputs(1, requires_grad=True)
    out = method.compute(teacher, student, {"tau_train": math.inf})
    assert set(out) == terms | {"transfer"}
    assert out["transfer"].dim() == 0 and torch.isfinite(out["transfer"])
    if name == "none":
        assert out["transfer"].item() == 0.0
        return
    out["transfer"].backward()
    used = method.student_keys({})
    assert any(student[k].grad is not None for k in used)
    for p in modules.parameters():
        assert p.grad is not None


def test_method_compute_matches_functions_and_cfg_object() -> None:
    class Cfg:  # attribute-style config works as well as a mapping
        lambda_kd = 2.0
        kd_temperature = 1.0

    s = {"logits": torch.tensor([[math.log(3.0), 0.0]])}
    t = {"logits": torch.tensor([[0.0, 0.0]])}
    out = get_method("kd").compute(t, s, Cfg())
    # KD(T=1) = ½ ln(4/3) = 0.1438410; × λ_kd = 2 → 0.2876821 = ln(4/3)
    assert out["kd"].item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-5)
    assert out["transfer"].item() == pytest.approx(math.log(4.0 / 3.0), rel=1e-5)


def test_hint_needs_make_modules() -> None:
    with pytest.raises(RuntimeError, match="make_modules"):
        get_method("hint").compute(_outputs(0), _outputs(1), None)
