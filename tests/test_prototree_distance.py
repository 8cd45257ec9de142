"""ProtoTree's distance is the Euclidean one (not squared), as the ProtoTree code's ``L2Conv2D``
(``sqrt(|‖z‖² − 2z·p + ‖p‖²| + 1e-14)``): it enters the routing ``exp(−d)`` and the τ of AAP/AJS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from p2p_cli.evaluation.activations import PassJob, compute_activations
from p2p_cli.metrics.active_patches import aap, ajs
from p2p_cli.models.prototree import ProtoTree, ProtoTreeConfig
from p2p_cli.runtime.device import Runtime

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def _tree(depth: int = 1) -> ProtoTree:
    return ProtoTree(ProtoTreeConfig(backbone="resnet18", num_classes=2, depth=depth, prototype_depth=2,
                                     feature_stride=16)).eval()


def test_hand_made_features_give_euclidean_distance_routing_and_aap() -> None:
    tree = _tree(depth=1)  # one prototype (the root), two leaves
    with torch.no_grad():
        tree.prototype_vectors.copy_(torch.tensor([0.0, 0.5])[None, :, None, None])
    # one image, D = 2, grid 1×2: cells z0 = (0, 0), z1 = (0.6, 0.8)
    feats = torch.tensor([[[[0.0, 0.6]], [[0.0, 0.8]]]])
    with torch.no_grad():
        out = tree.head(feats)
    # ‖z0 − p‖ = ‖(0, −0.5)‖ = 0.5;  ‖z1 − p‖ = ‖(0.6, 0.3)‖ = √0.45 = 0.6708204  (squared: 0.25, 0.45)
    torch.testing.assert_close(out.distances[0, 0, 0], torch.tensor([0.5, math.sqrt(0.45)]), atol=1e-5, rtol=0)
    assert out.min_distances.item() == pytest.approx(0.5, abs=1e-5)
    # routing: P(right at the root) = exp(−0.5) = 0.6065307 (squared would give exp(−0.25) = 0.7788008)
    assert tree.similarity(out.min_distances).item() == pytest.approx(math.exp(-0.5), rel=1e-5)
    # τ = 0.4 lies between d² = 0.25 and d = 0.5: with the Euclidean d nothing is active
    argmin = out.distances.flatten(2).argmin(2).numpy()
    assert aap(argmin, out.min_distances.numpy(), 0.4, 2) == 0.0
    assert aap(argmin, out.min_distances.numpy(), 0.5, 2) == 1.0


def test_evaluation_pass_records_the_euclidean_min_distance_of_a_tree() -> None:
    torch.manual_seed(0)
    tree = _tree(depth=2)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        z = tree.features(x).flatten(2).transpose(1, 2)  # (B, H·W, D)
        p = tree.prototypes  # (m, D)
        euclid = torch.cdist(z, p.unsqueeze(0).expand(len(x), -1, -1)).amin(1)  # (B, m), independent of the model
    job = PassJob(model=tree, n_images=3, base=True, clean=False, noisy=False)
    compute_activations([job], [(x, torch.zeros(3, dtype=torch.long), torch.arange(3))], CPU, n_images=3,
                        image_size=32)
    np.testing.assert_allclose(job.min_dist, euclid.numpy(), atol=1e-4)
    assert not np.allclose(job.min_dist, euclid.numpy() ** 2, atol=1e-3)
    # AJS of the tree against itself at the τ of its own median distance is 1 (paper fidelity)
    tau = float(np.median(job.min_dist))
    assert ajs(job.argmin, job.min_dist, job.argmin, job.min_dist, tau, 4) == 1.0
