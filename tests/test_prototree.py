"""ProtoTree routing, the derivative-free leaf update and pruning, on a hand-built depth-2 tree.

Tree (internal nodes breadth-first: 0 root, 1 its left child, 2 its right child; "right" means
"prototype present", probability p = exp(−d)):

    leaf 0 = left, left    leaf 1 = left, right    leaf 2 = right, left    leaf 3 = right, right
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch

from p2p_cli.models.factory import load_model, save_model
from p2p_cli.models.prototree import ProtoTree, ProtoTreeConfig, complete_routes, tree_from_routes

SIGMA = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.3, 0.7]])  # leaf class distributions (L=4, K=2)


@functools.cache
def _built(leaf_update: str, log_probabilities: bool, num_classes: int = 2, depth: int = 2) -> ProtoTree:
    cfg = ProtoTreeConfig(backbone="resnet18", num_classes=num_classes, depth=depth, prototype_depth=4,
                          feature_stride=16, leaf_update=leaf_update, log_probabilities=log_probabilities)
    return ProtoTree(cfg)


def make_tree(leaf_update: str = "gradient", log_probabilities: bool = True) -> ProtoTree:
    tree = copy.deepcopy(_built(leaf_update, log_probabilities))  # build each backbone once
    with torch.no_grad():
        tree.leaf_params.copy_(SIGMA.log())  # softmax(log σ) = σ
    return tree


def distances(*probabilities: float) -> torch.Tensor:
    """Min distances whose routing probabilities exp(−d) are the given values (one image)."""
    return torch.tensor([[-math.log(p) for p in probabilities]])


def test_complete_routes_encode_the_paths():
    assert complete_routes(2).tolist() == [[-1, -1, 0], [-1, 1, 0], [1, 0, -1], [1, 0, 1]]
    root = tree_from_routes(complete_routes(2))
    assert root.prototype == 0 and root.left.prototype == 1 and root.right.prototype == 2
    assert root.leaves() == [0, 1, 2, 3]


@pytest.mark.parametrize("leaf_update", ["gradient", "derivative-free"])
def test_routing_by_hand(leaf_update):
    tree = make_tree(leaf_update)
    d = distances(0.5, 0.25, 0.8)  # p_root = 0.5, p_1 = 0.25, p_2 = 0.8
    pi = tree.path_probabilities(d)[0]
    expected_pi = torch.tensor([0.5 * 0.75, 0.5 * 0.25, 0.5 * 0.2, 0.5 * 0.8])  # 0.375 0.125 0.1 0.4
    assert torch.allclose(pi, expected_pi, atol=1e-6)
    assert torch.allclose(tree.log_path_probabilities(d)[0].exp(), expected_pi, atol=1e-6)
    # ŷ_0 = 0.375·0.9 + 0.125·0.2 + 0.1·0.5 + 0.4·0.3 = 0.5325; ŷ_1 = 1 − 0.5325
    y = tree.logits_from_min_distances(d)[0].exp()
    assert torch.allclose(y, torch.tensor([0.5325, 0.4675]), atol=1e-5)
    modes = tree.predictions(d)
    assert modes["distributed"].item() == 0
    assert modes["sample_max"].item() == 1  # most probable leaf: 3 (0.4), which says class 1
    # greedy goes right iff p > 0.5: root p = 0.5 → left, node 1 p = 0.25 → left → leaf 0 (class 0)
    assert tree.greedy_leaves(d).item() == 0 and modes["greedy"].item() == 0
    assert tree.greedy_leaves(distances(0.6, 0.25, 0.8)).item() == 3  # right, then p_2 = 0.8 → right


def test_path_probabilities_sum_to_one_and_log_space_equals_plain():
    plain, logspace = make_tree(log_probabilities=False), make_tree(log_probabilities=True)
    with torch.no_grad():
        logspace.load_state_dict(plain.state_dict())
    big = _built("gradient", True, num_classes=5, depth=4)
    d = torch.rand(16, big.num_prototypes) * 3
    assert torch.allclose(big.path_probabilities(d).sum(1), torch.ones(16), atol=1e-5)
    assert torch.allclose(big.log_path_probabilities(d).exp(), big.path_probabilities(d), atol=1e-6)
    d4 = torch.rand(8, 3) * 3
    assert torch.allclose(plain.logits_from_min_distances(d4), logspace.logits_from_min_distances(d4), atol=1e-5)


def test_leaves_start_as_softmax_of_zeros():
    tree = copy.deepcopy(_built("derivative-free", True, num_classes=5, depth=3))
    assert tree.leaf_params.shape == (8, 5) and not tree.leaf_params.requires_grad
    assert torch.equal(tree.leaf_params, torch.zeros(8, 5))
    assert torch.allclose(tree.leaf_distributions(), torch.full((8, 5), 0.2))
    # a student tree whose leaves are not the teacher's starts from zeros too
    tree.leaf_params.data.fill_(3.0)
    tree.align_to(copy.deepcopy(tree), copy_head=False)
    assert torch.equal(tree.leaf_params, torch.zeros(8, 5))


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_derivative_free_leaf_update_by_hand():
    """Nauta et al. 2021, the derivative-free update as their code runs it:
    c ← max(c − c_start/n_batches, 0) + Σ_b π·σ·y/ŷ."""
    tree = make_tree("derivative-free")
    c0 = [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, -8.0]]
    with torch.no_grad():
        tree.leaf_params.copy_(torch.tensor(c0))
    sig = [_softmax(r) for r in c0]  # (0.880797, 0.119203), (0.268941, 0.731059), (½, ½), (0.999665, 0.000335)
    # image A: p = (0.5, 0.25, 0.8), class 0 → π = (0.375, 0.125, 0.1, 0.4)
    # image B: p = (0.25, 0.5, 0.5), class 1 → π = (0.375, 0.375, 0.125, 0.125)
    pi_a, pi_b = [0.375, 0.125, 0.1, 0.4], [0.375, 0.375, 0.125, 0.125]
    y_a = sum(pi_a[i] * sig[i][0] for i in range(4))  # ŷ_0(A)
    y_b = sum(pi_b[i] * sig[i][1] for i in range(4))  # ŷ_1(B)
    u = [[pi_a[i] * sig[i][0] / y_a, pi_b[i] * sig[i][1] / y_b] for i in range(4)]
    d = torch.cat([distances(0.5, 0.25, 0.8), distances(0.25, 0.5, 0.5)])
    labels = torch.tensor([0, 1])
    stats = tree.leaf_statistics(d, labels)
    assert torch.allclose(stats, torch.tensor(u), atol=1e-5)
    assert torch.allclose(stats.sum(0), torch.ones(2), atol=1e-6)  # each image's responsibilities sum to 1
    tree.begin_leaf_epoch()
    tree.update_leaves(stats, batches=4)  # c ← max(c − c0/4, 0) + u
    expected = [[max(c - c / 4, 0.0) + u[i][k] for k, c in enumerate(c0[i])] for i in range(4)]
    assert tree.leaf_params.tolist() == [pytest.approx(r, abs=1e-5) for r in expected]
    assert expected[3][1] == pytest.approx(u[3][1])  # −8 + 2 clamped at 0
    assert expected[0] == pytest.approx([1.5 + 0.375 * 0.880797 / y_a, 0.375 * 0.119203 / y_b], abs=1e-5)
    # a second step in the same epoch again removes c0/4 (the epoch start), not a quarter of the current c
    stats2 = tree.leaf_statistics(d, labels)
    tree.update_leaves(stats2, batches=4)
    expected2 = [[max(expected[i][k] - c0[i][k] / 4, 0.0) + float(stats2[i, k]) for k in range(2)] for i in range(4)]
    assert tree.leaf_params.tolist() == [pytest.approx(r, abs=1e-5) for r in expected2]


def _informative_tree(num_classes: int, depth: int) -> ProtoTree:
    """Every leaf's max σ ≥ 0.5: parameter 10 on one class, 0 elsewhere."""
    tree = copy.deepcopy(_built("derivative-free", True, num_classes=num_classes, depth=depth))
    with torch.no_grad():
        tree.leaf_params.zero_()
        for leaf in range(tree.num_leaves):
            tree.leaf_params[leaf, leaf % num_classes] = 10.0  # e^10 / (e^10 + 199) ≈ 0.991
    return tree


def test_pruning_removes_exactly_the_subtree_of_the_uninformative_leaf():
    tree = _informative_tree(200, 3)  # 8 leaves, 7 prototypes; leaf 5 = right, left, right
    with torch.no_grad():
        tree.leaf_params[5].zero_()  # uniform over 200 classes: max σ = 0.005
        tree.leaf_params[6].zero_()
        tree.leaf_params[6, 0] = math.log(0.012 * 199 / 0.988)  # max σ = 0.012: above τ = 0.01, kept
    assert tree.leaf_distributions().amax(1)[5].item() == pytest.approx(0.005)
    assert tree.leaf_distributions().amax(1)[6].item() == pytest.approx(0.012)
    assert tree.leaf_distributions().amax(1)[[0, 1, 2, 3, 4, 7]].min().item() >= 0.5
    routes = complete_routes(3)
    sizes = tree.prune_(0.01)
    assert sizes == {"leaves_before": 8, "prototypes_before": 7, "leaves_after": 7, "prototypes_after": 6}
    # leaf 5's parent is node 5 (root 0 → right 2 → left 5); leaf 4, its sibling, takes node 5's place
    keep_l, keep_m = [0, 1, 2, 3, 4, 6, 7], [0, 1, 2, 3, 4, 6]
    assert tree.routes.tolist() == routes[keep_l][:, keep_m].tolist()
    assert tree.routes[4].tolist() == [1, 0, -1, 0, 0, 0]  # leaf 4 is now reached by right, left


def test_pruning_never_removes_the_root():
    tree = _informative_tree(200, 2)
    with torch.no_grad():
        tree.leaf_params[[0, 1]] = 0.0  # the whole left subtree of the root is uninformative
    assert tree.prune_(0.01)["leaves_after"] == 4  # the public code keeps a root's child
    with torch.no_grad():
        tree.leaf_params.zero_()
    assert tree.prune_(0.01)["leaves_after"] == 4  # a tree prunable everywhere stays whole


def test_pruning_lifts_the_sibling_and_keeps_predictions_where_pruned_leaves_did_not_matter(tmp_path):
    tree = _informative_tree(200, 3)
    with torch.no_grad():
        tree.leaf_params[[2, 3]] = 0.0  # the subtree of node 4 (root → left 1 → right 4) is uniform
    # images that go left at node 1 with probability 1 (d_1 = ∞) never reach leaves 2, 3
    d = torch.rand(5, 7) * 3
    d[:, 1] = 1e4
    before = tree.logits_from_min_distances(d)
    greedy_before = tree.predictions(d)["greedy"]
    sizes = tree.prune_(0.01)
    assert sizes == {"leaves_before": 8, "prototypes_before": 7, "leaves_after": 6, "prototypes_after": 5}
    kept = [0, 2, 3, 5, 6]  # nodes 1 and 4 gone; node 3 took node 1's place
    assert tree.routes.tolist() == complete_routes(3)[[0, 1, 4, 5, 6, 7]][:, kept].tolist()
    after = tree.logits_from_min_distances(d[:, kept])
    assert torch.allclose(before, after, atol=1e-5)
    assert torch.equal(tree.predictions(d[:, kept])["greedy"], greedy_before)
    # a complete tree takes a pruned tree's state (what --resume after the prune step does)
    fresh = copy.deepcopy(_built("derivative-free", True, num_classes=200, depth=3))
    fresh.load_state_dict(tree.state_dict())
    assert torch.allclose(fresh.logits_from_min_distances(d[:, kept]), after, atol=1e-6)
    # a pruned tree saves and loads with its shape
    save_model(tmp_path / "m.safetensors", tree, stage="final", class_names=[f"c{i}" for i in range(200)])
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["arch"] == "prototree" and loaded.num_leaves == 6 and loaded.num_prototypes == 5
    assert torch.allclose(loaded.logits_from_min_distances(d[:, kept]), after, atol=1e-6)


def test_class_identity_marks_the_leaf_classes_below_each_node():
    tree = make_tree("gradient")
    # leaf classes: 0, 1, 0, 1 → every node has both classes below it except none
    assert tree.class_identity.tolist() == [[1, 1], [1, 1], [1, 1]]
    with torch.no_grad():
        tree.leaf_params[1] = torch.tensor([0.9, 0.1]).log()
    assert tree.class_identity.tolist() == [[1, 1], [1, 0], [1, 1]]
