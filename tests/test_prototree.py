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
        if leaf_update == "gradient":
            tree.leaf_params.copy_(SIGMA.log())  # softmax(log σ) = σ
        else:
            tree.leaf_params.copy_(SIGMA * 0.25)  # masses; c / Σc = σ
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


def test_derivative_free_leaf_update_by_hand():
    tree = make_tree("derivative-free")
    # image A: p = (0.5, 0.25, 0.8), class 0 → π = (0.375, 0.125, 0.1, 0.4), ŷ_0 = 0.5325
    # image B: p = (0.25, 0.5, 0.5), class 1 → π = (0.75·0.5, 0.75·0.5, 0.25·0.5, 0.25·0.5)
    #          = (0.375, 0.375, 0.125, 0.125), ŷ_1 = 0.375·0.1 + 0.375·0.8 + 0.125·0.5 + 0.125·0.7 = 0.4875
    d = torch.cat([distances(0.5, 0.25, 0.8), distances(0.25, 0.5, 0.5)])
    labels = torch.tensor([0, 1])
    stats = tree.leaf_statistics(d, labels)
    u = torch.tensor([[0.375 * 0.9 / 0.5325, 0.375 * 0.1 / 0.4875],
                      [0.125 * 0.2 / 0.5325, 0.375 * 0.8 / 0.4875],
                      [0.1 * 0.5 / 0.5325, 0.125 * 0.5 / 0.4875],
                      [0.4 * 0.3 / 0.5325, 0.125 * 0.7 / 0.4875]])
    assert torch.allclose(stats, u, atol=1e-5)
    tree.update_leaves(stats, count=2, smoothing=0.5)  # c ← 0.5·c + 0.5·u/2
    expected = 0.5 * SIGMA * 0.25 + 0.25 * u
    assert torch.allclose(tree.leaf_params.data, expected, atol=1e-5)
    # leaf 0: c = (0.225, 0.025) → (0.1125 + 0.25·0.633803, 0.0125 + 0.25·0.076923)
    assert tree.leaf_params.data[0].tolist() == pytest.approx([0.270951, 0.031731], abs=1e-5)


def test_pruning_lifts_the_sibling_and_keeps_predictions_where_pruned_leaves_did_not_matter(tmp_path):
    tree = make_tree("gradient")
    with torch.no_grad():
        tree.leaf_params[0] = torch.tensor([0.0, 0.0])  # uniform
        tree.leaf_params[1] = torch.tensor([0.004, 0.0])  # max − 1/K = 0.001 ≤ 0.01: nearly uniform
        tree.leaf_params[2] = torch.tensor([0.6, 0.4]).log()  # informative: kept
    # images that go right at the root with probability 1 (d_root = 0) never reach leaves 0, 1
    d = torch.cat([torch.zeros(5, 1), torch.rand(5, 1) * 3, torch.rand(5, 1) * 3], dim=1)
    before = tree.logits_from_min_distances(d)
    greedy_before = tree.predictions(d)["greedy"]
    sizes = tree.prune_(0.01)
    assert sizes == {"leaves_before": 4, "prototypes_before": 3, "leaves_after": 2, "prototypes_after": 1}
    assert tree.routes.tolist() == [[-1], [1]]  # node 2 took the root's place
    after = tree.logits_from_min_distances(d[:, [2]])
    assert torch.allclose(before, after, atol=1e-5)
    assert torch.equal(tree.predictions(d[:, [2]])["greedy"], greedy_before)
    # a complete tree takes a pruned tree's state (what --resume after the prune step does)
    fresh = make_tree("gradient")
    fresh.load_state_dict(tree.state_dict())
    assert torch.allclose(fresh.logits_from_min_distances(d[:, [2]]), after, atol=1e-6)
    # a pruned tree saves and loads with its shape
    save_model(tmp_path / "m.safetensors", tree, stage="final", class_names=["a", "b"])
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["arch"] == "prototree" and loaded.num_leaves == 2 and loaded.num_prototypes == 1
    assert torch.allclose(loaded.logits_from_min_distances(d[:, [2]]), after, atol=1e-6)


def test_class_identity_marks_the_leaf_classes_below_each_node():
    tree = make_tree("gradient")
    # leaf classes: 0, 1, 0, 1 → every node has both classes below it except none
    assert tree.class_identity.tolist() == [[1, 1], [1, 1], [1, 1]]
    with torch.no_grad():
        tree.leaf_params[1] = torch.tensor([0.9, 0.1]).log()
    assert tree.class_identity.tolist() == [[1, 1], [1, 0], [1, 1]]
