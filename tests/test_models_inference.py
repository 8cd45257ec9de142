"""models.inference: the frozen teacher copy (BatchNorm folded, weights in the autocast dtype)."""

from __future__ import annotations

import torch
from torch import nn

from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.models.inference import fold_batchnorm, frozen_inference_copy
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig


def test_fold_batchnorm_by_hand():
    # conv 1→1 channel, 1×1 kernel, weight 2, bias 1; BN γ=3, β=0.5, μ=1, σ²=4-ε: y = 3 (2x + 1 − 1)/2 + 0.5 = 3x + 0.5
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).eval()
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[0].bias.fill_(1.0)
        net[1].weight.fill_(3.0)
        net[1].bias.fill_(0.5)
        net[1].running_mean.fill_(1.0)
        net[1].running_var.fill_(4.0 - net[1].eps)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1
    assert torch.allclose(convs[0].weight, torch.tensor(3.0).view(1, 1, 1, 1))
    assert torch.allclose(convs[0].bias, torch.tensor([0.5]))
    x = torch.tensor([[[[0.0, 1.0], [-2.0, 4.0]]]])
    assert torch.allclose(folded(x), 3 * x + 0.5)
    assert isinstance(net[1], nn.BatchNorm2d)  # the original is untouched


def test_frozen_copy_matches_the_model_and_leaves_it_untouched():
    torch.manual_seed(0)
    model = ProtoPNet(ProtoPNetConfig("resnet18", 3, prototypes_per_class=2, prototype_depth=8, feature_stride=16))
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    before = weights_hash(model.state_dict())
    fast = frozen_inference_copy(model)
    assert weights_hash(model.state_dict()) == before
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.backbone.modules())
    assert not any(p.requires_grad for p in fast.parameters()) and not fast.training
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = model(images), fast(images)
    assert torch.allclose(got.features, want.features, atol=1e-5)
    assert torch.allclose(got.min_distances, want.min_distances, rtol=1e-4, atol=1e-5)
    low = frozen_inference_copy(model, amp_dtype=torch.bfloat16)
    assert {p.dtype for p in low.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in low.add_on.parameters()} == {torch.float32}  # add-on and prototypes stay fp32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = low(images)
    assert out.features.dtype == torch.float32
    assert torch.allclose(out.features, want.features, atol=0.05)  # bf16 rounding


def test_fold_batchnorm_with_timms_batchnorm_activation_layers():
    from p2p_cli.models.backbones import create_backbone
    from p2p_cli.models.registry import get_backbone_spec

    torch.manual_seed(0)
    body, _ = create_backbone(get_backbone_spec("tf_efficientnet_lite0"), feature_stride=16)
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    body.eval()
    folded = fold_batchnorm(body)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in body.modules())  # the original keeps its layers
    assert sum(isinstance(m, nn.ReLU6) for m in folded.modules()) == sum(
        isinstance(m, nn.ReLU6) for m in body.modules())  # every activation stays
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), body(x), atol=1e-4, rtol=1e-4)


def test_a_conv_output_used_twice_is_not_folded():
    class TwoUsers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # folding would change the second use of y

    net = TwoUsers().eval()
    with torch.no_grad():
        net.bn.running_mean.fill_(1.0)
    folded = fold_batchnorm(net)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    x = torch.randn(1, 1, 2, 2)
    assert torch.equal(folded(x), net(x))


def test_distillation_teacher_outputs_are_the_models_for_what_the_method_reads(monkeypatch):
    from p2p_cli.io.config import build_config
    from p2p_cli.losses.registry import get_method
    from p2p_cli.models import protopnet
    from p2p_cli.runtime.device import Runtime
    from p2p_cli.training.distillation import DistillObjective

    torch.manual_seed(0)
    teacher = ProtoPNet(ProtoPNetConfig("resnet18", 3, prototypes_per_class=2, prototype_depth=8,
                                        feature_stride=16)).eval().requires_grad_(False)
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = teacher(images)
    calls: list[int] = []
    real = protopnet.min_distances_at_argmin
    monkeypatch.setattr(protopnet, "min_distances_at_argmin", lambda *a: calls.append(1) or real(*a))
    p2p = DistillObjective(build_config({"method": "proto2proto"}), teacher, get_method("proto2proto"), rt, teacher)
    got = p2p.teacher_outputs(images)
    assert set(got) == {"features", "distances", "prototypes"} and calls == []  # no arg-min gather, no logits
    assert torch.allclose(got["features"], want.features, atol=1e-5)
    assert torch.allclose(got["distances"], want.distances, rtol=1e-4, atol=1e-4)
    kd = DistillObjective(build_config({"method": "kd"}), teacher, get_method("kd"), rt, teacher)
    logits = kd.teacher_outputs(images)["logits"]  # Hinton KD reads the logits: the whole forward pass
    assert calls and torch.allclose(logits, want.logits, rtol=1e-4, atol=1e-4)
