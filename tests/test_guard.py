"""Numerical guards of training (p2p_cli.training.guard) and the trainer stopping on a NaN."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from p2p_cli.errors import P2PWarning
from p2p_cli.training.guard import (
    DivergenceWatch,
    NonFiniteError,
    check_grad_norm,
    check_parameters,
    check_terms,
    grad_norm,
)
from tests.conftest import run_cli


def test_check_terms_names_the_first_non_finite_term():
    check_terms({"ce": torch.tensor(1.0), "total": torch.tensor(2.0)}, "step 1")
    with pytest.raises(NonFiniteError, match=r"^step 3 \(joint\): loss term 'clst' is nan"):
        check_terms({"ce": torch.tensor(1.0), "clst": torch.tensor(float("nan")),
                     "total": torch.tensor(float("inf"))}, "step 3 (joint)")


def test_grad_norm_is_the_global_l2_norm():
    a, b, c = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # c has no gradient
    assert float(grad_norm([a, b, c])) == pytest.approx(5.0)  # sqrt(3² + 4²)
    check_grad_norm([a, b, c], "s")
    b.grad = torch.tensor([float("inf")])
    with pytest.raises(NonFiniteError, match="gradient norm is inf"):
        check_grad_norm([a, b, c], "s")


def test_check_parameters_names_the_parameter():
    layer = nn.Linear(2, 2)
    check_parameters({"": layer}, "s")
    with torch.no_grad():
        layer.bias[1] = float("nan")
    with pytest.raises(NonFiniteError, match="parameter 'extra.bias' holds NaN/inf"):
        check_parameters({"extra.": layer}, "s")


def test_divergence_watch_warns_once_past_the_factor():
    watch = DivergenceWatch(factor=10.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not watch.update(0.5, "a")  # the reference: max(|0.5|, 1) = 1
        assert not watch.update(10.0, "b")  # exactly the limit: no warning
        assert watch.update(-10.5, "c")  # |−10.5| > 10
        assert not watch.update(1e9, "d")  # once only
    assert [str(w.message) for w in caught if issubclass(w.category, P2PWarning)] == \
        ["c: the loss is diverging (-10.5, at the start 0.5); lower the learning rates"]


def test_nan_in_a_later_step_stops_training_and_keeps_the_last_good_snapshot(tmp_path, tiny_config, capsys,
                                                                                monkeypatch):
    """The warm step (step 1) finishes and is snapshotted; a NaN loss in the first joint epoch stops the
    run with one line naming step 2 and the term; the snapshot of step 1 stays, no model is written."""
    from p2p_cli.training.objectives import TaskObjective

    real = TaskObjective.loss

    def poisoned(self, model, out, images, labels, stage):  # noqa: ANN001, ANN202
        terms = real(self, model, out, images, labels, stage)
        if stage == "joint":
            terms["clst"] = terms["clst"] * float("nan")
        return terms

    monkeypatch.setattr(TaskObjective, "loss", poisoned)
    code, _, err = run_cli(["train-teacher", "--config", str(tiny_config), "--workdir", str(tmp_path), "--name", "t",
                            "--device", "cpu", "-q"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("Error: step 2/5 (joint, epoch 2, batch 1): loss term 'clst' is nan"), err
    run = tmp_path / "t"
    assert not (run / "model.safetensors").exists()
    from safetensors import safe_open

    with safe_open(str(run / "checkpoints" / "last.safetensors"), framework="pt") as fh:
        assert json.loads(fh.metadata()["snapshot"])["step"] == 1
        assert all(bool(torch.isfinite(fh.get_tensor(k)).all()) for k in fh.keys()
                   if fh.get_slice(k).get_dtype().startswith("F"))
    assert not (tmp_path / ".t.lock").exists()  # the lock is released on the error
