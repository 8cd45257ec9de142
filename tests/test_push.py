"""Push (prototype projection), its provenance and `p2p push-prototypes`.

The session's tiny teacher (trained with the real CLI) is copied into the module's workdir; everything
else reuses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from p2p_cli.data.images import load_image
from p2p_cli.data.index import Sample
from p2p_cli.data.transforms import normalize
from p2p_cli.io.checkpoint import load_tensors, weights_hash
from p2p_cli.models.factory import load_model, save_model
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig
from p2p_cli.models.receptive_field import feature_intervals, receptive_field_boxes, structural_surrogate
from p2p_cli.runtime.device import Runtime
from p2p_cli.training.push import push_prototypes
from tests.conftest import run_cli, teacher_workdir

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


@pytest.fixture(scope="module")
def trained(shared_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Workdir with the tiny teacher `t` (a copy of the session's, trained by the real CLI, its final push
    included)."""
    return teacher_workdir(shared_teacher, tmp_path_factory.mktemp("push"), "t")


def _features_at_sources(model: ProtoPNet, records: list[dict], image_size: int) -> torch.Tensor:
    """The add-on feature (m, D) at each prototype's recorded source image and grid location."""
    feats = []
    with torch.no_grad():
        for rec in records:
            image = load_image(Sample(Path(rec["source"]["path"]), 0), image_size)
            f = model.features(normalize(image)[None])[0]
            h, w = rec["location"]
            feats.append(f[:, h, w])
    return torch.stack(feats)


# ----------------------------------------------------------------------------- push_prototypes (unit)


def test_push_matches_brute_force_and_is_restricted_to_own_class():
    torch.manual_seed(0)
    model = ProtoPNet(ProtoPNetConfig("resnet18", 3, prototypes_per_class=2, prototype_depth=8,
                                      feature_stride=16)).eval()
    images = torch.randn(10, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    loader = [(images[:4], labels[:4], torch.arange(4)), (images[4:], labels[4:], torch.arange(4, 10))]
    old = model.prototypes.detach().clone()
    with torch.no_grad():
        feats = model.features(images)  # (N, D, H, W)
    z = feats.flatten(2).transpose(1, 2)  # (N, HW, D)
    result = push_prototypes(model, loader, CPU)
    for j in range(model.num_prototypes):
        k = j // 2
        d = ((z[labels == k] - old[j]) ** 2).sum(-1)  # own-class images only
        assert labels[result.image_index[j]] == k
        assert float(result.distance_before[j]) == pytest.approx(float(d.min()), rel=1e-4, abs=1e-5)
        n = int(result.image_index[j])
        h, w = result.location[j].tolist()
        assert torch.equal(model.prototypes[j], feats[n, :, h, w])  # the prototype IS that patch
        assert float(result.distance_after[j]) == 0.0
        with torch.no_grad():  # the recorded map is the pushed prototype's own map on its source image
            own = model(images[n:n + 1]).distances[0, j]
        assert torch.allclose(result.distance_maps[j], own, atol=1e-4) and float(result.distance_maps[j, h, w]) == 0
    # pushing again moves nothing: exactly zero distances and the same patches
    again = push_prototypes(model, loader, CPU)
    assert torch.equal(again.distance_before, torch.zeros(model.num_prototypes))
    assert torch.equal(again.image_index, result.image_index) and torch.equal(again.location, result.location)


def test_push_leaves_prototypes_of_classes_without_images_alone():
    torch.manual_seed(1)
    model = ProtoPNet(ProtoPNetConfig("resnet18", 3, prototypes_per_class=1, prototype_depth=8,
                                      feature_stride=16)).eval()
    old = model.prototypes.detach().clone()
    loader = [(torch.randn(3, 3, 32, 32), torch.tensor([0, 0, 1]), torch.arange(3))]
    result = push_prototypes(model, loader, CPU)
    assert result.image_index.tolist()[2] == -1 and torch.isnan(result.distance_before[2])
    assert torch.equal(model.prototypes[2], old[2])


# ----------------------------------------------------------------------------- receptive fields


def test_receptive_field_of_a_known_conv_stack():
    # conv3 p1 → maxpool2 → conv3 p1 → conv3 s2 (no padding): cell i sees input [4i − 3, 4i + 9) ∩ [0, 32)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    xs, ys = feature_intervals(net, 32)
    expected = [(max(0, 4 * i - 3), min(32, 4 * i + 9)) for i in range(7)]
    assert xs == expected and ys == expected
    assert isinstance(net[2], nn.MaxPool2d)  # the network itself is untouched


def test_receptive_field_through_clipping_activations():
    # residual sums grow the surrogate's activations past 6, where ReLU6 has no gradient; a block
    # without a skip then cuts every path (EfficientNet-Lite's stride-2 blocks). conv3 p1 →
    # (1×1 residual) ×4 → 1×1 conv → ReLU6: cell i sees [i − 1, i + 2)
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = nn.Conv2d(4, 4, 1), nn.ReLU6()

        def forward(self, x):
            return x + self.act(self.conv(x))

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6(), *[Residual() for _ in range(4)],
                        nn.Conv2d(4, 4, 1), nn.ReLU6())
    xs, ys = feature_intervals(net, 8)
    expected = [(max(0, i - 1), min(8, i + 2)) for i in range(8)]
    assert xs == expected and ys == expected


class _TinyProtoNet(nn.Module):
    """Backbone + 1×1 add-on, the two attributes receptive_field_boxes reads (config-less: no cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                                      nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, stride=2, padding=1))
        self.add_on = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Sigmoid())


def test_receptive_field_boxes_are_exact_off_the_diagonal():
    model = _TinyProtoNet().eval()
    boxes = receptive_field_boxes(model, 64)  # 8×8 grid; boxes come from the diagonal cells
    assert len(boxes) == 8 and len(boxes[0]) == 8
    surrogate = structural_surrogate(nn.Sequential(model.backbone, model.add_on))
    for h, w in ((0, 5), (6, 1), (3, 7)):
        x = (torch.rand(1, 3, 64, 64) + 0.5).requires_grad_(True)
        surrogate(x)[0, :, h, w].sum().backward()
        nz = x.grad[0].abs().sum(0) > 0
        rows, cols = torch.nonzero(nz.any(1)).flatten(), torch.nonzero(nz.any(0)).flatten()
        direct = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        assert boxes[h][w] == direct
        assert direct[2] - direct[0] < 64  # smaller than the image: a shifted box would be seen


# ----------------------------------------------------------------------------- the trained run and the CLI


def test_trainer_provenance_has_receptive_field_and_region(trained: Path):
    doc = json.loads((trained / "t" / "prototypes.json").read_text())
    for rec in doc["prototypes"]:
        assert rec["source"]["label"] in rec["classes"]  # own-class images only
        x0, y0, x1, y1 = rec["receptive_field_box"]
        px0, py0, px1, py1 = rec["patch_box"]
        assert x0 <= px0 and y0 <= py0 and x1 >= px1 and y1 >= py1  # the field contains its cell
        assert rec["source"]["region"] == [0.0, 0.0, 48.0, 48.0]


def test_every_prototype_equals_the_feature_at_its_recorded_source(trained: Path):
    model, _ = load_model(trained / "t" / "model.safetensors")
    records = json.loads((trained / "t" / "prototypes.json").read_text())["prototypes"]
    feats = _features_at_sources(model, records, 32)
    assert torch.allclose(model.prototypes, feats, atol=1e-5), (model.prototypes - feats).abs().max()


def test_push_prototypes_on_a_pushed_model_moves_nothing(trained: Path, capsys):
    run = trained / "t"
    before = weights_hash(load_tensors(run / "model.safetensors")[0])
    report = trained / "push.json"
    code, out, err = run_cli(["push-prototypes", "--model", "t", "--workdir", str(trained), "--device", "cpu",
                              "--json", str(report)], capsys)
    assert code == 0, err
    assert "no prototype moved" in out
    summary = json.loads(report.read_text())
    assert summary["moved"] == 0 and summary["prototypes"] == 6
    records = json.loads((run / "prototypes.json").read_text())["prototypes"]
    assert all(r["distance_before"] == 0.0 and r["distance_after"] == 0.0 for r in records)
    assert weights_hash(load_tensors(run / "model.safetensors")[0]) == before
    for j in range(6):
        for kind in ("patch", "box", "heatmap"):
            path = run / "prototypes" / f"prototype-{j:03d}-{kind}.png"
            assert path.is_file(), path
    from PIL import Image

    with Image.open(run / "prototypes" / "prototype-000-heatmap.png") as im:
        assert im.size[0] >= 224  # 32-px inputs are enlarged for viewing
    with Image.open(run / "prototypes" / "prototype-000-patch.png") as im:
        x0, y0, x1, y1 = records[0]["activation_box"]
        assert im.size == (x1 - x0, y1 - y0)


def test_push_that_moves_prototypes_needs_overwrite_or_a_new_name(trained: Path, capsys):
    src = trained / "t"
    moved_run = trained / "unpushed"
    shutil.copytree(src, moved_run)
    model, meta = load_model(moved_run / "model.safetensors")
    with torch.no_grad():
        noise = torch.randn(model.prototype_vectors.shape, generator=torch.Generator().manual_seed(0))
        model.prototype_vectors.add_(0.05 * noise)
    save_model(moved_run / "model.safetensors", model, stage="final", class_names=meta["class_names"],
               extra={"test_acc": meta.get("test_acc")})
    code, _, err = run_cli(["push-prototypes", "--model", str(moved_run), "--workdir", str(trained),
                            "--device", "cpu", "--no-save-images"], capsys)
    assert code == 2 and "moved 6 of 6 prototypes" in err and "--overwrite" in err and "Traceback" not in err
    code, out, err = run_cli(["push-prototypes", "--model", str(moved_run), "--workdir", str(trained),
                              "--device", "cpu", "--no-save-images", "--name", "repushed"], capsys)
    assert code == 0, err
    assert "6 prototypes moved" in out and "test accuracy" in out
    new = trained / "repushed"
    assert (new / "config.yaml").is_file() and not (new / "prototypes").exists()
    pushed, new_meta = load_model(new / "model.safetensors")
    assert new_meta["pushed_from"] == str(moved_run)
    records = json.loads((new / "prototypes.json").read_text())["prototypes"]
    assert all(r["distance_before"] > 0 for r in records)
    assert torch.allclose(pushed.prototypes, _features_at_sources(pushed, records, 32), atol=1e-5)
    unchanged, _ = load_model(moved_run / "model.safetensors")  # the source run keeps its unpushed weights
    assert torch.equal(unchanged.prototypes, model.prototypes)
    # the push moved the perturbed prototypes (back onto training patches: often the original ones)
    assert not torch.equal(model.prototype_vectors, pushed.prototype_vectors)
    # pushing the pushed copy again moves nothing
    code, out, err = run_cli(["push-prototypes", "--model", "repushed", "--workdir", str(trained), "--device", "cpu",
                              "--no-save-images"], capsys)
    assert code == 0 and "no prototype moved" in out, err


def test_push_prototypes_unknown_model_is_a_one_line_error(trained: Path, capsys):
    code, _, err = run_cli(["push-prototypes", "--model", "nope", "--workdir", str(trained)], capsys)
    assert code == 2 and "not found" in err and "Traceback" not in err


def test_push_prototypes_repairs_a_corrupt_prototypes_json(trained: Path, capsys):
    """The error for an unreadable prototypes.json says "re-create it with p2p push-prototypes": that must work."""
    run = trained / "corrupt"
    shutil.copytree(trained / "t", run)
    (run / "prototypes.json").write_text("{not json")
    code, out, err = run_cli(["push-prototypes", "--model", str(run), "--workdir", str(trained), "--device", "cpu",
                              "--no-save-images", "--batch-size", "4", "--workers", "0"], capsys)
    assert code == 0, err
    assert "no prototype moved" in out
    doc = json.loads((run / "prototypes.json").read_text())
    assert len(doc["prototypes"]) == 6 and doc["image_size"] == 32


def test_push_prototypes_dataset_override_needs_a_root(trained: Path, capsys):
    """--dataset cub replaces the run's synthetic dataset, whose data_root must not be reused."""
    code, _, err = run_cli(["push-prototypes", "--model", "t", "--workdir", str(trained), "--device", "cpu",
                            "--dataset", "cub"], capsys)
    assert code == 2 and "needs a data root" in err and "Traceback" not in err
