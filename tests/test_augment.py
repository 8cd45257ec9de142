"""BatchAugment and its projective maps: hand-checked geometry, seeding, probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from p2p_cli.data.transforms import (
    BatchAugment,
    jpeg_compress,
    normalize,
    perspective_maps,
    rotation_maps,
    shear_maps,
    warp,
)


def _apply(m: torch.Tensor, x: float, y: float) -> tuple[float, float]:
    p = m @ torch.tensor([x, y, 1.0], dtype=torch.float64)
    return float(p[0] / p[2]), float(p[1] / p[2])


def test_rotation_and_shear_maps_by_hand() -> None:
    r = rotation_maps(torch.tensor([90.0, 0.0]))
    assert _apply(r[0], 1.0, 0.0) == pytest.approx((0.0, 1.0))  # (cos 90°, sin 90°)
    assert torch.allclose(r[1], torch.eye(3, dtype=torch.float64))
    sh = shear_maps(torch.tensor([45.0, 45.0]), torch.tensor([False, True]))
    assert _apply(sh[0], 0.0, 0.5) == pytest.approx((0.5, 0.5))  # x_in = x + tan(45°)·y
    assert _apply(sh[1], 0.5, 0.0) == pytest.approx((0.5, 0.5))  # y_in = y + tan(45°)·x


def test_perspective_maps_take_dst_corners_to_src_corners() -> None:
    src = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    dst = torch.tensor([[[-0.8, -0.9], [0.7, -1.0], [1.0, 0.6], [-0.9, 0.95]]])
    m = perspective_maps(src, dst)[0]
    for (x, y), (u, v) in zip(dst[0].tolist(), src[0].tolist(), strict=True):
        assert _apply(m, x, y) == pytest.approx((u, v), abs=1e-9)
    # corners moved inwards by half: a pure zoom by 2 about the centre
    assert torch.allclose(perspective_maps(src, src * 0.5)[0], torch.diag(torch.tensor([2.0, 2.0, 1.0],
                                                                                        dtype=torch.float64)))


def test_warp_identity_rot90_flip_and_borders() -> None:
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    eye = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    assert torch.allclose(warp(x, eye), x, atol=1e-4)
    # output (x, y) reads input R(90°)(x, y) = (-y, x): a quarter turn of the pixel grid
    assert torch.allclose(warp(x, rotation_maps(torch.tensor([90.0, 90.0]))), torch.rot90(x, 1, (2, 3)), atol=1e-4)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)).repeat(2, 1, 1)
    assert torch.allclose(warp(x, mirror), x.flip(-1), atol=1e-4)
    # a shift by one pixel to the right: zeros enter on the left, or the edge column with `border`
    shift = eye.clone()
    shift[:, 0, 2] = -2 / 5
    out = warp(x, shift, border=torch.tensor([False, True]))
    assert torch.allclose(out[0, :, :, 1:], x[0, :, :, :-1], atol=1e-4) and out[0, :, :, 0].abs().max() < 1e-4
    assert torch.allclose(out[1, :, :, 0], x[1, :, :, 0], atol=1e-4)


def test_warp_flow_is_a_displacement_in_normalised_units() -> None:
    x = torch.rand(1, 3, 4, 4)
    flow = torch.zeros(1, 4, 4, 2)
    flow[..., 1] = 2 / 4  # read one row further down
    out = warp(x, torch.eye(3, dtype=torch.float64).unsqueeze(0), flow)
    assert torch.allclose(out[0, :, :-1], x[0, :, 1:], atol=1e-5) and out[0, :, -1].abs().max() < 1e-5


def test_batch_augment_without_augmentation_only_normalises() -> None:
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    out = BatchAugment(augment=False)(images, torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert out.dtype == torch.float32 and torch.allclose(out, (images.float() / 255 - mean) / std, atol=1e-5)
    # no geometry at all, flip with probability 1: the mirror image
    flipped = BatchAugment(rotation=0, skew=0, shear=0, elastic=0, flip=1.0)(images, torch.Generator().manual_seed(1))
    assert torch.allclose(flipped, normalize(images.flip(-1)), atol=1e-4)


@pytest.mark.parametrize("mode", ["choice", "all"])
def test_batch_augment_is_seeded_and_changes_images(mode: str) -> None:
    images = torch.zeros((8, 3, 32, 32), dtype=torch.uint8)
    images[:, :, 8:24, 4:12] = 255
    aug = BatchAugment(mode=mode, elastic=0.5)
    a = aug(images, torch.Generator().manual_seed(3))
    b = aug(images, torch.Generator().manual_seed(3))
    c = aug(images, torch.Generator().manual_seed(4))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = normalize(images)
    assert sum(not torch.allclose(a[i], plain[i], atol=1e-3) for i in range(8)) >= 7
    # geometry moves pixels but keeps the value range (bilinear interpolation of 0 and 255)
    assert a.min() >= plain.min() - 1e-4 and a.max() <= plain.max() + 1e-4


def test_batch_augment_choice_probabilities() -> None:
    """One operation per image: with elastic = 1 every image is distorted only (edges replicated,
    small displacements), with flip = 0.5 about half the images are mirrored."""
    images = torch.rand(1, 3, 16, 16).mul(255).to(torch.uint8).repeat(400, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    only_elastic = BatchAugment(elastic=1.0, flip=0.0)(images, gen)
    plain = normalize(images)
    # a smooth displacement of at most 0.06 of the side keeps most of each image close to the original
    assert (only_elastic - plain).abs().mean() < 0.5 * (plain - plain.mean()).abs().mean()
    flips = BatchAugment(rotation=0, skew=0, shear=0, elastic=0, flip=0.5)(images, gen)
    mirrored = torch.isclose(flips, normalize(images.flip(-1)), atol=1e-4).flatten(1).all(1)
    assert 160 < int(mirrored.sum()) < 240


def test_batch_augment_jpeg_step() -> None:
    images = (torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    out = BatchAugment(augment=False, jpeg=1.0)(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, normalize(jpeg_compress(images)), atol=1e-5)
    assert torch.equal(BatchAugment(augment=False, jpeg=0.0)(images), normalize(images))


def test_batch_augment_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        BatchAugment()(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        BatchAugment(mode="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        BatchAugment(elastic=1.5)
    assert math.isclose(BatchAugment().rotation, 15.0)
