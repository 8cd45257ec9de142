"""What train-teacher and distill do when the user gives no config: the built-in schedule, and the
one line that says which schedule runs and how long it will take (measured from the first steps).

Without ``--config`` the built-in synthetic data is used with a schedule sized for the device: a
CPU-sized one when there is no GPU (the four commands of the walkthrough finish in minutes on two
cores), and the paper-like defaults of :class:`~p2p_cli.io.config.TrainConfig` on a GPU. The
paper's own settings for CUB-200-2011 and Stanford Cars are in ``examples/``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from p2p_cli.data.loaders import DataBundle
from p2p_cli.io.config import TrainConfig
from p2p_cli.runtime.device import Runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.workflows.presets import SYNTHETIC_FAST

CPU_SCHEDULE: dict[str, Any] = {
    **SYNTHETIC_FAST,
    "synthetic_test_per_class": 20,
    "epochs": 12,
}
"""The built-in CPU schedule: the quickstart's fast synthetic settings (1,000 training images of 10
classes at 112 px, stride-16 features giving a 7×7 grid, one push at the end) for 12 epochs, with
200 test images, so that train-teacher, distill, evaluate and visualize together take minutes on
two cores (about 2 min for a resnet50 teacher and 2 min for its resnet18 student on a 2-core
AVX512-BF16 CPU, measured)."""

CPU_BOTTLENECK_RESNETS: dict[str, Any] = {"lambda_clst": 0.08, "lambda_sep": -0.008}
"""What the CPU schedule changes for the randomly initialised bottleneck ResNets (resnet50, 101, 152):
ProtoPNet's cluster and separation weights (Chen et al. 2019, §2.2; 0.8 and −0.08) ÷ 10. At full
weight they pull the add-on features (1024 saturating inputs at stride 16) and the prototypes
onto one point before the backbone separates the classes: CE stays at ln 10 for all 12 epochs
(measured; see docs/resnet50-cpu-schedule.md)."""

BOTTLENECK_RESNETS = frozenset({"resnet50", "resnet101", "resnet152"})

FORWARD_SHARE = 0.35
"""A forward pass of an image costs about this share of a training step (forward + backward)."""


def default_schedule(device_type: str, backbone: str | None = None) -> tuple[str, dict[str, Any]]:
    """(what the user is told, the config values) of the schedule used without ``--config``;
    ``backbone`` (the ``--backbone`` flag) selects a family's entry of the CPU schedule."""
    if device_type == "cpu":
        values = dict(CPU_SCHEDULE)
        if backbone in BOTTLENECK_RESNETS:
            values.update(CPU_BOTTLENECK_RESNETS)
        return "built-in data, CPU-sized schedule (no GPU)", values
    return "built-in data, paper-like schedule (GPU)", {}


def schedule_line(cfg: TrainConfig, label: str, seconds: float) -> str:
    """The one line printed once the first steps are measured."""
    eta = f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"
    epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"
    return (f"no --config: {label}: {cfg.dataset} data, {cfg.image_size} px, {epochs}; estimated time {eta} "
            "(measured from the first steps); the paper's settings: examples/")


def estimated_seconds(cfg: TrainConfig, sec_per_train_image: float, train_images: int, test_images: int) -> float:
    """Seconds of a whole schedule from the measured seconds per training image.

    Training: ``epochs × train_images`` steps' worth of images; forward-only passes (test accuracy
    after each epoch, the push and the last layer's cached similarities) at :data:`FORWARD_SHARE`.
    """
    trained = cfg.epochs * train_images * cfg.repeats
    evaluations = cfg.epochs // cfg.eval_every + 2
    forwarded = evaluations * test_images + 2 * train_images
    return sec_per_train_image * (trained + FORWARD_SHARE * forwarded)


class EstimatingReporter(Reporter):
    """A reporter that times the first training batches (after one warm-up batch) and then prints
    one line from ``line(seconds_per_image)``; everything else is ``inner``'s."""

    def __init__(self, inner: Reporter, line: Callable[[float], str], batch_size: int, probe: int = 3) -> None:
        super().__init__(enabled=inner.enabled, verbose=inner.verbose, console=inner.console)
        self._line, self._batch_size, self._probe = line, batch_size, probe
        self._done = False

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        with super().task(description, total) as advance:
            if self._done or not description.startswith("epoch "):
                yield advance
                return
            clock: list[float] = []

            def timed(n: int = 1, **fields: Any) -> None:
                advance(n, **fields)
                clock.append(time.perf_counter())
                if len(clock) == self._probe + 1:
                    self._report(clock)

            yield timed
            if not self._done and len(clock) >= 2:
                self._report(clock)

    def _report(self, clock: list[float]) -> None:
        self._done = True
        per_image = (clock[-1] - clock[0]) / ((len(clock) - 1) * self._batch_size)
        self.info(self._line(per_image))


def with_estimate(reporter: Reporter, cfg: TrainConfig, label: str, data: DataBundle) -> Reporter:
    """``reporter`` that prints :func:`schedule_line` once the first training steps are timed."""
    train, test = len(data.index.train), len(data.index.test)
    return EstimatingReporter(reporter, lambda s: schedule_line(cfg, label, estimated_seconds(cfg, s, train, test)),
                              cfg.batch_size)


def loss_weights(cfg: TrainConfig) -> dict[str, float]:
    """The weight of each loss term in the total: ProtoPNet ``CE + λ_clst·Clst + λ_sep·Sep +
    λ_l1·L1`` (Chen et al. 2019, §2.2), Proto2Proto ``λ_global·L_global + λ_ppc·L_ppc`` (Eq. 6),
    the KD baselines' ``kd_weight`` (RKD: 25 × distance + 50 × angle, Park et al. 2019)."""
    return {"ce": 1.0, "nll": 1.0, "clst": cfg.lambda_clst, "sep": cfg.lambda_sep, "l1": cfg.lambda_l1,
            "ppc": cfg.lambda_ppc, "global": cfg.lambda_global, "hint": cfg.kd_weight, "kd": cfg.kd_weight,
            "rkd_distance": 25.0 * cfg.kd_weight, "rkd_angle": 50.0 * cfg.kd_weight}


def precision_name(rt: Runtime) -> str:
    """``bf16``, ``fp16`` or ``fp32``: the autocast precision as the config spells it."""
    return {"bfloat16": "bf16", "float16": "fp16"}.get(str(rt.amp_dtype).removeprefix("torch."), "fp32")
