"""Proto2Proto losses (Eq. 1-6) pinned on hand-worked tensors, both fidelity modes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from p2p_cli.errors import P2PError
from p2p_cli.losses.proto2proto import active_patch_mask, global_loss, ppc_loss, transfer_losses

# Teacher distances, B = 2, m = 3, H = W = 2.  (arg-min location, min distance) per prototype:
DIST_T = torch.tensor(
    [
        [
            [[0.5, 2.0], [3.0, 4.0]],  # p0: (0,0), 0.5
            [[5.0, 1.0], [6.0, 7.0]],  # p1: (0,1), 1.0
            [[9.0, 8.0], [2.5, 2.5]],  # p2: tie (1,0)/(1,1) → first = (1,0), 2.5
        ],
        [
            [[1.0, 1.0], [1.0, 1.0]],  # p0: four-way tie → (0,0), 1.0
            [[4.0, 3.0], [2.0, 0.2]],  # p1: (1,1), 0.2
            [[7.0, 0.3], [5.0, 6.0]],  # p2: (0,1), 0.3
        ],
    ]
)

# Features D = 2. Teacher ω^T = 1 everywhere; student ω^S = 1 + δ with δ below.
DELTA = torch.tensor(
    [
        [[[1.0, 2.0], [100.0, 100.0]], [[0.0, 1.0], [100.0, 100.0]]],
        [[[1.0, 1.0], [50.0, 2.0]], [[1.0, 0.0], [50.0, 0.0]]],
    ]
)
FEAT_T = torch.ones(2, 2, 2, 2)
FEAT_S = 1.0 + DELTA

# Prototypes m = 3, D = 2: differences p^S − p^T = [3, 4], [0, 0], [0, 1].
PROTO_T = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
PROTO_S = torch.tensor([[3.0, 4.0], [1.0, 1.0], [2.0, 1.0]])


@pytest.mark.parametrize(
    ("tau", "expected"),
    [
        # τ = 0.9: img0 p0 (0.5) only → (0,0); img1 p1 (0.2) → (1,1), p2 (0.3) → (0,1); p0 (1.0) > τ
        (0.9, [[[1, 0], [0, 0]], [[0, 1], [0, 1]]]),
        # τ = 1.0 (inclusive ≤): img0 adds p1 → (0,1); img1 adds p0 → (0,0)
        (1.0, [[[1, 1], [0, 0]], [[1, 1], [0, 1]]]),
        # τ = 3: img0 adds p2 at the FIRST tied location (1,0), not (1,1)
        (3.0, [[[1, 1], [1, 0]], [[1, 1], [0, 1]]]),
        (math.inf, [[[1, 1], [1, 0]], [[1, 1], [0, 1]]]),
        (0.1, [[[0, 0], [0, 0]], [[0, 0], [0, 0]]]),
    ],
)
def test_active_patch_mask_hand(tau: float, expected: list) -> None:
    mask = active_patch_mask(DIST_T, tau)
    assert mask.shape == (2, 2, 2)
    assert mask.dtype == DIST_T.dtype
    torch.testing.assert_close(mask, torch.tensor(expected, dtype=torch.float32))


def _mask_loop(d: torch.Tensor, tau: float) -> torch.Tensor:
    b, m, h, w = d.shape
    out = torch.zeros(b, h, w)
    for i in range(b):
        for j in range(m):
            best, loc = math.inf, (0, 0)
            for y in range(h):
                for x in range(w):
                    if d[i, j, y, x].item() < best:  # strict: keeps the first minimum
                        best, loc = d[i, j, y, x].item(), (y, x)
            if best <= tau:
                out[i, loc[0], loc[1]] = 1.0
    return out


@pytest.mark.parametrize("tau", [0.0, 2.0, 5.0, math.inf])
def test_active_patch_mask_matches_loop(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randint(0, 8, (3, 5, 4, 3), generator=g).float()  # small integers: many ties
    torch.testing.assert_close(active_patch_mask(d, tau), _mask_loop(d, tau))


def test_mask_has_no_gradient() -> None:
    d = DIST_T.clone().requires_grad_(True)
    mask = active_patch_mask(d, 1.0)
    assert not mask.requires_grad


def test_ppc_loss_hand_both_fidelities() -> None:
    # mask at τ = 1.0: img0 {(0,0), (0,1)}, img1 {(0,0), (0,1), (1,1)} → ΣM = 5
    # img0: δ² at (0,0),(0,1): c0 1² + 2² = 5, c1 0² + 1² = 1 → 6   (the 100s are masked out)
    # img1: δ² at (0,0),(0,1),(1,1): c0 1 + 1 + 4 = 6, c1 1 + 0 + 0 = 1 → 7   (the 50s masked out)
    mask = active_patch_mask(DIST_T, 1.0)
    # paper, Eq. 4: (1/N) Σ_n ‖M·δ_n‖₂ = (√6 + √7) / 2 = (2.4494897 + 2.6457513) / 2 = 2.5476205
    assert ppc_loss(FEAT_T, FEAT_S, mask, fidelity="paper").item() == pytest.approx(2.5476205, rel=1e-6)
    assert ppc_loss(FEAT_T, FEAT_S, mask).item() == pytest.approx(2.5476205, rel=1e-6)  # paper is the default
    # reference code: Σ M·δ² / (2·ΣM + 1) = (6 + 7) / 11 = 1.1818182
    assert ppc_loss(FEAT_T, FEAT_S, mask, fidelity="reference").item() == pytest.approx(13.0 / 11.0, rel=1e-6)


def test_ppc_loss_second_golden_example() -> None:
    # B = 3, D = 2, H = 1, W = 2.  ω^T = 0; ω^S per image (channel-major [c][w]):
    #   img0 [[3, 9], [4, 9]], mask [1, 0] → active cell 0: δ = (3, 4) → ‖·‖ = 5, Σδ² = 25
    #   img1 [[1, 2], [2, 4]], mask [1, 1] → δ = (1, 2, 2, 4) → ‖·‖ = √25 = 5, Σδ² = 25
    #   img2 anything, mask [0, 0] → 0
    # paper: (5 + 5 + 0) / 3 = 3.3333333;  reference: (25 + 25) / (2·3 + 1) = 50/7 = 7.1428571
    f_s = torch.tensor([[[[3.0, 9.0]], [[4.0, 9.0]]], [[[1.0, 2.0]], [[2.0, 4.0]]], [[[7.0, 7.0]], [[7.0, 7.0]]]])
    f_t = torch.zeros_like(f_s)
    mask = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    assert ppc_loss(f_t, f_s, mask, fidelity="paper").item() == pytest.approx(10.0 / 3.0, rel=1e-6)
    assert ppc_loss(f_t, f_s, mask, fidelity="reference").item() == pytest.approx(50.0 / 7.0, rel=1e-6)


def _eq4_independent(f_t: torch.Tensor, f_s: torch.Tensor, mask: torch.Tensor) -> float:
    """Proto2Proto Eq. 4 written out with Python loops: (1/N) Σ_n sqrt(Σ_{d,h,w} (M·(ω^T − ω^S))²)."""
    n, d, h, w = f_t.shape
    total = 0.0
    for i in range(n):
        sq = sum((mask[i, y, x].item() * (f_t[i, c, y, x].item() - f_s[i, c, y, x].item())) ** 2
                 for c in range(d) for y in range(h) for x in range(w))
        total += math.sqrt(sq)
    return total / n


def _reference_independent(f_t: torch.Tensor, f_s: torch.Tensor, mask: torch.Tensor) -> float:
    """The reference code's featureLoss_mask: Σ M·(ω^T − ω^S)² / (2ΣM + 1)."""
    num = float(((f_t.double() - f_s.double()) ** 2 * mask.double().unsqueeze(1)).sum())
    return num / (2.0 * float(mask.double().sum()) + 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppc_loss_matches_independent_implementations_on_random_tensors(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    f_t, f_s = torch.rand(3, 5, 4, 3, generator=g), torch.rand(3, 5, 4, 3, generator=g)
    mask = (torch.rand(3, 4, 3, generator=g) < 0.4).float()
    mask[0] = 0.0  # one image without active patches
    assert ppc_loss(f_t, f_s, mask, fidelity="paper").item() == pytest.approx(_eq4_independent(f_t, f_s, mask),
                                                                             abs=1e-6)
    assert ppc_loss(f_t, f_s, mask, fidelity="reference").item() == pytest.approx(
        _reference_independent(f_t, f_s, mask), abs=1e-6)


def test_ppc_loss_paper_gradient_hand_and_finite_on_empty_image() -> None:
    # img0: ω^T = (0, 0), ω^S = (3, 4), M = 1 → ‖δ‖ = 5, ∂/∂ω^S = (ω^S − ω^T)/(5·B) = (0.3, 0.4) with B = 2
    # img1: M = 0 → contributes 0 and gradient 0 (not NaN)
    f_t = torch.zeros(2, 2, 1, 1)
    f_s = torch.tensor([[[[3.0]], [[4.0]]], [[[1.0]], [[1.0]]]], requires_grad=True)
    mask = torch.tensor([[[1.0]], [[0.0]]])
    loss = ppc_loss(f_t, f_s, mask, fidelity="paper")
    loss.backward()
    assert loss.item() == pytest.approx(2.5)
    torch.testing.assert_close(f_s.grad, torch.tensor([[[[0.3]], [[0.4]]], [[[0.0]], [[0.0]]]]))


@pytest.mark.parametrize("fidelity", ["paper", "reference"])
def test_ppc_loss_empty_mask_is_zero(fidelity: str) -> None:
    # ΣM = 0 → paper: mean of zero norms = 0; reference: 0 / (0 + 1) = 0 (the "+1" keeps it finite)
    assert ppc_loss(FEAT_T, FEAT_S, torch.zeros(2, 2, 2), fidelity=fidelity).item() == 0.0


def test_global_loss_hand_both_fidelities() -> None:
    # paper: (‖[3,4]‖ + ‖[0,0]‖ + ‖[0,1]‖) / 3 = (5 + 0 + 1) / 3 = 2.0
    assert global_loss(PROTO_T, PROTO_S, "paper").item() == pytest.approx(2.0)
    # reference: (3 + 4 + 0 + 0 + 0 + 1) / 6 = 8/6 = 1.3333333
    assert global_loss(PROTO_T, PROTO_S, "reference").item() == pytest.approx(8.0 / 6.0)
    # (m, D, 1, 1) parameters as the model stores them give the same values
    t4, s4 = PROTO_T[:, :, None, None], PROTO_S[:, :, None, None]
    assert global_loss(t4, s4, "paper").item() == pytest.approx(2.0)


def test_global_loss_gradient_only_to_student_and_finite_at_zero() -> None:
    p_t = PROTO_T.clone().requires_grad_(True)
    p_s = PROTO_S.clone().requires_grad_(True)
    global_loss(p_t, p_s, "paper").backward()
    assert p_t.grad is None  # teacher detached
    # d/dp_s of mean_j ‖Δ_j‖ = Δ_j / (‖Δ_j‖·m): row0 [3,4]/(5·3) = [0.2, 0.26667]; row1 Δ=0 → 0 (not NaN);
    # row2 [0,1]/(1·3) = [0, 0.33333]
    expected = torch.tensor([[0.2, 0.8 / 3.0], [0.0, 0.0], [0.0, 1.0 / 3.0]])
    torch.testing.assert_close(p_s.grad, expected)
    p_s.grad = None
    global_loss(p_t, p_s, "reference").backward()
    # sign(Δ)/6: [1/6, 1/6], [0, 0], [0, 1/6]
    expected = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]]) / 6.0
    torch.testing.assert_close(p_s.grad, expected)
    assert p_t.grad is None
    # the teacher tensor itself is untouched
    torch.testing.assert_close(p_t.detach(), PROTO_T)


def test_global_loss_identical_prototypes() -> None:
    p_s = PROTO_T.clone().requires_grad_(True)
    loss = global_loss(PROTO_T, p_s, "paper")
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(p_s.grad, torch.zeros_like(p_s))


def test_unknown_fidelity_and_shape_mismatch() -> None:
    with pytest.raises(P2PError, match="did you mean 'paper'"):
        global_loss(PROTO_T, PROTO_S, "papr")
    with pytest.raises(P2PError, match="teacher m×D = 3×2, student m×D = 2×2"):
        global_loss(PROTO_T, PROTO_S[:2])
    with pytest.raises(P2PError):
        ppc_loss(FEAT_T, FEAT_S[:, :1], torch.ones(2, 2, 2))


def test_transfer_losses_paper_and_reference() -> None:
    # paper: mask from the TEACHER at τ = 1 → ppc = (√6 + √7)/2 = 2.5476205 (Eq. 4); global = 2.0
    #   total = 10·2.0 + 10·2.5476205 = 45.476205
    out = transfer_losses(DIST_T, FEAT_T, PROTO_T, None, FEAT_S, PROTO_S, tau_train=1.0, fidelity="paper")
    assert set(out) == {"ppc", "global", "total_transfer"}
    assert out["ppc"].item() == pytest.approx(2.5476205, rel=1e-6)
    assert out["global"].item() == pytest.approx(2.0)
    assert out["total_transfer"].item() == pytest.approx(45.476205, rel=1e-6)
    # reference: mask from the STUDENT's distances = all zeros → every prototype's first arg-min is
    #   (0,0) with d = 0 ≤ τ → only (0,0) active per image, ΣM = 2, denominator 5
    #   img0 δ²(0,0) = 1 + 0 = 1; img1 δ²(0,0) = 1 + 1 = 2 → ppc = 3/5 = 0.6; global = 8/6
    #   total = 10·8/6 + 10·0.6 = 13.333333 + 6 = 19.333333
    dist_s = torch.zeros(2, 3, 2, 2)
    out = transfer_losses(DIST_T, FEAT_T, PROTO_T, dist_s, FEAT_S, PROTO_S, tau_train=1.0, fidelity="reference")
    assert out["ppc"].item() == pytest.approx(0.6, rel=1e-6)
    assert out["global"].item() == pytest.approx(8.0 / 6.0)
    assert out["total_transfer"].item() == pytest.approx(80.0 / 6.0 + 6.0, rel=1e-6)
    # λ weights apply: λ_global = 0, λ_ppc = 1 → total = ppc
    out = transfer_losses(
        DIST_T, FEAT_T, PROTO_T, None, FEAT_S, PROTO_S, tau_train=1.0, lambda_global=0.0, lambda_ppc=1.0
    )
    assert out["total_transfer"].item() == pytest.approx(2.5476205, rel=1e-6)
    with pytest.raises(ValueError, match="student"):
        transfer_losses(DIST_T, FEAT_T, PROTO_T, None, FEAT_S, PROTO_S, fidelity="reference")


class _TinyProtoNet(nn.Module):
    """Conv backbone → add-on (1×1 conv + sigmoid) → prototypes; distances as the model computes them."""

    def __init__(self, d: int = 2, m: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, kernel_size=3, stride=2, padding=1)
        self.add_on = nn.Sequential(nn.Conv2d(4, d, kernel_size=1), nn.Sigmoid())
        self.prototypes = nn.Parameter(torch.rand(m, d, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.add_on(torch.relu(self.backbone(x)))
        p = self.prototypes.flatten(1)
        dist = (
            (z**2).sum(1, keepdim=True) - 2 * torch.einsum("bdhw,md->bmhw", z, p) + (p**2).sum(1)[None, :, None, None]
        ).relu()
        return z, dist


@pytest.mark.parametrize("fidelity", ["paper", "reference"])
def test_gradients_reach_only_the_student_with_inference_mode_teacher(fidelity: str) -> None:
    torch.manual_seed(0)
    teacher, student = _TinyProtoNet(), _TinyProtoNet()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        z_t, d_t = teacher(x)
        # even a mask computed inside inference mode must work (it is cloned in ppc_loss)
        mask_t = active_patch_mask(d_t, math.inf)
    assert z_t.is_inference() and mask_t.is_inference()
    z_s, d_s = student(x)
    z_s.retain_grad()
    out = transfer_losses(
        d_t, z_t, teacher.prototypes, d_s, z_s, student.prototypes, tau_train=math.inf, fidelity=fidelity
    )
    out["total_transfer"].backward()
    for name, p in student.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in teacher.parameters():
        assert p.grad is None

    # ppc alone, with the inference-mode mask: gradient into ω^S is exactly 0 where M = 0
    z_s2, _ = student(x)
    z_s2.retain_grad()
    ppc_loss(z_t, z_s2, mask_t, fidelity).backward()
    grad = z_s2.grad
    assert grad is not None
    inactive = (mask_t == 0).unsqueeze(1).expand_as(grad)
    assert torch.all(grad[inactive] == 0)
    assert torch.all(grad[~inactive] != 0)
    assert mask_t.sum() > 0 and (mask_t == 0).any()  # the test checks both regions
