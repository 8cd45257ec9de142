"""The Cars/CUB example configs reproduce the Proto2Proto reference code's schedule epoch for epoch.

The reference (``protopnet_kd.py``, ``protopnet_basic.py``, args ``stepStart 16, stepSize 4,
gamma 0.1, warmEpochs 6, pushStart 12``) counts epochs from 1, trains warm epochs 1-6 with the warm
optimizer, and after every joint epoch ≥ 16 calls ``StepLR(step_size=4, gamma=0.1).step()``; it
pushes after the epochs in ``range(12, maxEpochs, 10)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from p2p_cli.io.config import build_config, read_config_file
from p2p_cli.training.recipes import recipe_for
from p2p_cli.training.schedule import push_epochs

EXAMPLES = sorted(p for p in (Path(__file__).parent.parent / "examples").glob("*.yaml")
                  if p.name.startswith(("cars-", "cub-")))

# The reference's joint-stage factor in 1-based epochs 1..30, worked out by hand: epochs 16-19
# step the scheduler to last_epoch 1-4, so ×0.1 takes effect in epoch 20, ×0.01 in 24, ×0.001 in 28.
REFERENCE_FACTOR = [1.0] * 19 + [0.1] * 4 + [0.01] * 4 + [0.001] * 3
REFERENCE_PUSHES = [12, 22]  # range(12, 30, 10), 1-based


def _p2p_factors(cfg) -> list[tuple[str, float]]:
    recipe = recipe_for("protopnet")
    return [(s.stage, recipe.lr_factor(cfg, s.stage, s.epoch)) for s in recipe.plan(cfg) if s.kind == "epoch"]


def _step_lr_loop(epochs: int, warm: int, step_start: int, step_size: int, gamma: float) -> list[float]:
    """The reference loop with torch's own StepLR: the factor each 1-based epoch trains at."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)
    factors = []
    for epoch in range(1, epochs + 1):
        factors.append(1.0 if epoch <= warm else opt.param_groups[0]["lr"])
        if epoch > warm and epoch >= step_start:
            opt.step()
            sched.step()
    return factors


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_schedule_matches_the_reference_epoch_for_epoch(path: Path) -> None:
    cfg = build_config(read_config_file(path), {"data_root": "/data"}, source=str(path))
    assert cfg.epochs == 30 and cfg.warm_epochs == 6
    rows = _p2p_factors(cfg)
    print(f"\n{path.name}: epoch (1-based), stage, lr_backbone × factor")
    for e, (stage, f) in enumerate(rows, start=1):
        print(f"  {e:2d} {stage:5s} {cfg.lr_backbone * f:.1e}" if stage == "joint" else f"  {e:2d} warm  (frozen)")
    assert [s for s, _ in rows] == ["warm"] * 6 + ["joint"] * 24
    assert [f for _, f in rows] == pytest.approx(REFERENCE_FACTOR, rel=1e-12)
    assert _step_lr_loop(30, 6, 16, 4, 0.1) == pytest.approx(REFERENCE_FACTOR, rel=1e-12)
    # pushes: the reference's, plus p2p's push after the last epoch (every saved model is pushed)
    assert [e + 1 for e in push_epochs(cfg)] == REFERENCE_PUSHES + [30]


def test_the_old_start_decayed_three_epochs_early() -> None:
    cfg = build_config(read_config_file(EXAMPLES[0]), {"data_root": "/data", "lr_step_start": 16})
    first = next(e for e, (_, f) in enumerate(_p2p_factors(cfg), start=1) if f < 1.0)
    assert first == 17  # vs the reference's 20
