"""ProtoPNet loss terms pinned on hand-worked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from p2p_cli.errors import P2PError
from p2p_cli.losses.protopnet import cluster_cost, l1_off_class, protopnet_loss, separation_cost

# m = 3 prototypes, K = 2 classes: p0 → class 0, p1 → class 1, p2 → classes 0 AND 1 (merged).
CLASS_IDENTITY = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
# image 0 (class 0): own {p0, p2} = {3, 1}, other {p1} = {2}
# image 1 (class 1): own {p1, p2} = {5, 0.5}, other {p0} = {4}
MIN_DIST = torch.tensor([[3.0, 2.0, 1.0], [4.0, 5.0, 0.5]])
LABELS = torch.tensor([0, 1])
# last layer (K=2, m=3); off-class entries: W[0,1] = -0.5 and W[1,0] = -0.25 (p2 is own for both)
WEIGHT = torch.tensor([[1.0, -0.5, 0.3], [-0.25, 2.0, 0.7]])


def test_cluster_cost_uses_merged_prototype() -> None:
    # min own: image 0 → min(3, 1) = 1 (the merged p2); image 1 → min(5, 0.5) = 0.5 (p2)
    # Clst = (1 + 0.5) / 2 = 0.75
    assert cluster_cost(MIN_DIST, LABELS, CLASS_IDENTITY).item() == pytest.approx(0.75)


def test_separation_cost_excludes_merged_prototype() -> None:
    # min other: image 0 → p1 = 2; image 1 → p0 = 4 (p2 = 0.5 is own-class, not other)
    # Sep = (2 + 4) / 2 = 3.0
    assert separation_cost(MIN_DIST, LABELS, CLASS_IDENTITY).item() == pytest.approx(3.0)


def test_l1_off_class() -> None:
    # 1 − Iᵀ = [[0, 1, 0], [1, 0, 0]] → |−0.5| + |−0.25| = 0.75
    assert l1_off_class(WEIGHT, CLASS_IDENTITY).item() == pytest.approx(0.75)


def test_protopnet_loss_total() -> None:
    # CE: image 0 logits [0, 0], y=0 → ln 2; image 1 logits [ln 3, 0], y=1 → p = 1/4 → ln 4
    # ce = (ln 2 + ln 4) / 2 = 1.5 ln 2 = 1.0397208
    # total = 1.0397208 + 0.8·0.75 − 0.08·3 + 1e-4·0.75 = 1.0397208 + 0.6 − 0.24 + 0.000075 = 1.3997958
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    out = protopnet_loss(logits, MIN_DIST, LABELS, CLASS_IDENTITY, WEIGHT)
    assert set(out) == {"ce", "clst", "sep", "l1", "total"}
    assert out["ce"].item() == pytest.approx(1.5 * math.log(2.0), rel=1e-6)
    assert out["clst"].item() == pytest.approx(0.75)
    assert out["sep"].item() == pytest.approx(3.0)
    assert out["l1"].item() == pytest.approx(0.75)
    assert out["total"].item() == pytest.approx(1.3997958, rel=1e-6)
    # custom weights are honoured: λ = (1, -1, 1) → 1.0397208 + 0.75 − 3 + 0.75 = -0.4602792
    out = protopnet_loss(
        logits, MIN_DIST, LABELS, CLASS_IDENTITY, WEIGHT, lambda_clst=1.0, lambda_sep=-1.0, lambda_l1=1.0
    )
    assert out["total"].item() == pytest.approx(-0.4602792, rel=1e-6)


def test_class_without_prototype_is_finite() -> None:
    # K = 3; class 2 has no prototype left (pruned). Labels [0, 2].
    ci = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    md = MIN_DIST.clone().requires_grad_(True)
    labels = torch.tensor([0, 2])
    # Clst: image 1 has no own prototype → excluded; image 0 → 1.0  ⇒ Clst = 1.0
    # Sep: image 0 → 2; image 1 → every prototype is "other" → min(4, 5, 0.5) = 0.5 ⇒ (2 + 0.5)/2 = 1.25
    clst = cluster_cost(md, labels, ci)
    sep = separation_cost(md, labels, ci)
    assert clst.item() == pytest.approx(1.0)
    assert sep.item() == pytest.approx(1.25)
    (clst + sep).backward()
    assert torch.isfinite(md.grad).all()
    # grad of Clst: only d[0, 2] (=1/1); of Sep: d[0,1] and d[1,2] with 1/2 each
    expected = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.5]])
    torch.testing.assert_close(md.grad, expected)


def test_batch_with_no_own_prototype_gives_zero() -> None:
    ci = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    md = MIN_DIST.clone().requires_grad_(True)
    labels = torch.tensor([2, 2])
    clst = cluster_cost(md, labels, ci)
    assert clst.item() == 0.0
    clst.backward()
    assert torch.equal(md.grad, torch.zeros_like(md))


def test_gradients_of_cluster_and_separation() -> None:
    md = MIN_DIST.clone().requires_grad_(True)
    cluster_cost(md, LABELS, CLASS_IDENTITY).backward()
    # argmin own: (0, 2) and (1, 2), each weighted 1/B = 0.5
    torch.testing.assert_close(md.grad, torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]]))
    md.grad = None
    separation_cost(md, LABELS, CLASS_IDENTITY).backward()
    torch.testing.assert_close(md.grad, torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]))


def test_l1_shape_mismatch_is_a_user_error() -> None:
    with pytest.raises(P2PError):
        l1_off_class(WEIGHT.t(), CLASS_IDENTITY)
