"""The fidelity switches of the training schedule: the last-layer stage's data (cached vs the
augmented loader, as ProtoPNet and the Proto2Proto code) and the reference code's joint stage
that also trains the student's last layer."""

from __future__ import annotations

import pytest
import torch
import yaml

from p2p_cli.data.loaders import build_datasets
from p2p_cli.io.config import TrainConfig, with_overrides
from p2p_cli.losses.registry import get_method
from p2p_cli.models.factory import build_model
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.runtime.seeding import seed_everything
from p2p_cli.training.distillation import DistillObjective
from p2p_cli.training.objectives import TaskObjective
from p2p_cli.training.recipes import recipe_for
from p2p_cli.training.schedule import Step, last_layer_data
from p2p_cli.training.trainer import Trainer
from tests.conftest import TINY_CONFIG

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)


def test_last_layer_data_auto_follows_fidelity() -> None:
    assert last_layer_data(TrainConfig()) == "cached"
    assert last_layer_data(TrainConfig(fidelity="reference")) == "augmented"
    assert last_layer_data(TrainConfig(fidelity="reference", last_layer_data="cached")) == "cached"
    assert last_layer_data(TrainConfig(last_layer_data="augmented")) == "augmented"


def test_joint_stage_trains_the_last_layer_only_when_asked() -> None:
    recipe, cfg = recipe_for("protopnet"), TrainConfig()
    base = ("backbone", "add_on", "prototypes", "extra")
    assert recipe.stage_groups("joint", cfg) == base
    assert recipe.stage_groups("joint", cfg, joint_head=True) == base + ("last_layer",)
    assert recipe.stage_groups("joint", cfg, joint_head=True, head_frozen=True) == base  # teacher's head, frozen
    assert "last_layer" not in recipe.stage_groups("warm", cfg, joint_head=True)  # stage 1: transfer terms only
    assert recipe.stage_groups("joint", cfg, joint_head=True) == base + ("last_layer",)
    assert recipe_for("prototree").stage_groups("joint", cfg, joint_head=True) == base  # trees: no last layer


class _JointHead(TaskObjective):
    trains_head_jointly = True


def _tiny(tmp_path, **overrides):
    cfg = with_overrides(None, **{**yaml.safe_load(TINY_CONFIG), **overrides})
    seed_everything(cfg.seed)
    data = build_datasets(cfg)
    model = build_model(cfg, len(data.classes), CPU)
    return cfg, data, model


def _frozen_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.startswith("last_layer") and "running" not in k and "num_batches" not in k}


def test_augmented_last_layer_stage_trains_only_the_last_layer_on_the_augmented_loader(tmp_path) -> None:
    cfg, data, model = _tiny(tmp_path, last_layer_data="augmented", last_layer_epochs=3)
    trainer = Trainer(cfg, model, TaskObjective(cfg), data, CPU, None, Reporter(enabled=False))
    before, h0 = _frozen_state(model), model.last_layer.weight.detach().clone()
    rows = trainer._last_layer(Step("last_layer", "last_layer", 0), 5)
    assert [r["ll_epoch"] for r in rows] == [1, 2, 3]
    assert all(r["stage"] == "last_layer" and {"ce", "l1", "total", "train_acc"} <= set(r) for r in rows)
    assert "test_acc" in rows[-1] and "test_acc" not in rows[0]  # measured once, after the stage
    # 18 training images, batch 6 → 3 batches per epoch: ce is a mean over the augmented images
    assert not torch.equal(model.last_layer.weight, h0)
    after = _frozen_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # backbone, add-on, prototypes frozen
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("last_layer"))


def test_cached_and_augmented_last_layer_differ_and_both_are_deterministic(tmp_path) -> None:
    weights = {}
    for mode in ("cached", "augmented", "augmented"):
        cfg, data, model = _tiny(tmp_path, last_layer_data=mode)
        trainer = Trainer(cfg, model, TaskObjective(cfg), data, CPU, None, Reporter(enabled=False))
        trainer._last_layer(Step("last_layer", "last_layer", 0), 3)
        w = model.last_layer.weight.detach().clone()
        if mode in weights:
            assert torch.equal(weights[mode], w)  # same seed, same step → bit-identical
        weights[mode] = w
    assert not torch.equal(weights["cached"], weights["augmented"])


def test_joint_head_objective_puts_the_last_layer_in_the_joint_optimizer(tmp_path) -> None:
    cfg, data, model = _tiny(tmp_path)
    h0 = model.last_layer.weight.detach().clone()
    trainer = Trainer(cfg, model, _JointHead(cfg), data, CPU, None, Reporter(enabled=False))
    trainer.train_epoch(Step("epoch", "joint", 1), 1)
    opt = trainer.optimizers["joint"]
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["last_layer"]["lr"] == cfg.lr_last_layer and groups["last_layer"]["weight_decay"] == 0.0
    assert not torch.equal(model.last_layer.weight, h0)
    plain = Trainer(cfg, model, TaskObjective(cfg), data, CPU, None, Reporter(enabled=False))
    plain.train_epoch(Step("epoch", "joint", 1), 1)
    assert "last_layer" not in {g["name"] for g in plain.optimizers["joint"].param_groups}


def test_distillation_trains_the_head_jointly_only_in_reference_fidelity(tmp_path) -> None:
    cfg, _, teacher = _tiny(tmp_path)
    for fidelity, expected in (("paper", False), ("reference", True)):
        c = with_overrides(cfg, fidelity=fidelity)
        objective = DistillObjective(c, teacher, get_method("proto2proto"), CPU, teacher)
        assert objective.trains_head_jointly is expected


def test_hint_regresses_the_student_backbone_onto_the_teacher_backbone(tmp_path) -> None:
    cfg, data, teacher = _tiny(tmp_path)
    cfg = with_overrides(cfg, method="hint")
    student = build_model(cfg, len(data.classes), CPU)
    teacher.eval()
    objective = DistillObjective(cfg, teacher, get_method("hint"), CPU, student)
    conv = objective.modules["hint_regressor"].conv
    # resnet18 tapped at stride 16 (layer3): 256 channels on both sides, not the prototype depth D = 8
    assert (conv.in_channels, conv.out_channels) == (256, 256) != (cfg.prototype_depth, cfg.prototype_depth)
    images = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    out = student(images)
    terms = objective.loss(student, out, images, torch.tensor([0, 1]), "warm")
    # the value is MSE(ReLU(conv(v^S)), u^T) of the two backbones' outputs
    with torch.no_grad():
        expected = (torch.relu(conv(student.backbone(images))) - teacher.backbone(images)).square().mean()
    assert terms["hint"].item() == pytest.approx(expected.item(), rel=1e-5)
    terms["total"].backward()
    assert conv.weight.grad is not None
    assert any(p.grad is not None for p in student.backbone.parameters())
    assert all(p.grad is None for p in student.add_on.parameters())  # the hint does not reach the add-on
