"""What ``evaluate`` can be asked: metric names, τ thresholds and the other options.

Shared by the CLI and quickstart. This module imports neither torch nor numpy, so the CLI can
parse and document ``--metrics`` and ``--tau`` without loading them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.config import SEED_MAX

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "DEFAULT_TAUS",
    "EXTRA_METRICS",
    "EvalOptions",
    "parse_metrics",
    "parse_taus",
    "tau_key",
]

DEFAULT_TAUS: tuple[float, ...] = (0.01, 0.1, 0.2, 0.45, 1.0, 3.0, 5.0, math.inf)
DEFAULT_METRICS: tuple[str, ...] = ("acc", "aap", "ajs", "pms")
EXTRA_METRICS: tuple[str, ...] = ("consistency", "stability", "explanation", "sparsity")
ALL_METRICS: tuple[str, ...] = DEFAULT_METRICS + EXTRA_METRICS


def tau_key(tau: float) -> str:
    """The JSON key of τ: ``"inf"`` for infinity, else the shortest round-tripping decimal
    without a trailing ``.0`` (``1.0 → "1"``, ``0.45 → "0.45"``)."""
    if math.isinf(tau):
        return "inf"
    text = repr(float(tau))
    return text[:-2] if text.endswith(".0") else text


def parse_taus(values: Sequence[str | float] | None) -> tuple[float, ...]:
    """τ thresholds from strings (``"inf"`` allowed; comma-separated lists too); order kept,
    duplicates dropped. Negative, NaN or ``-inf`` values are one-line errors."""
    if not values:
        return DEFAULT_TAUS
    out: list[float] = []
    for value in values:
        for part in (str(value).split(",") if isinstance(value, str) else [value]):
            text = str(part).strip()
            if not text:
                continue
            try:
                tau = math.inf if text.lower() in ("inf", "infinity", "+inf") else float(text)
            except ValueError:
                raise P2PError(f"--tau expects numbers or 'inf', got {text!r}") from None
            if math.isnan(tau) or tau < 0:
                raise P2PError(f"--tau values must be ≥ 0 (or inf), got {text!r}")
            if tau not in out:
                out.append(tau)
    if not out:
        raise P2PError("--tau needs at least one value")
    return tuple(out)


def parse_metrics(values: Sequence[str] | None) -> tuple[str, ...]:
    """Metric names (``all`` = every metric; comma-separated lists too), in canonical order."""
    if not values:
        return DEFAULT_METRICS
    chosen: set[str] = set()
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name == "all":
                chosen.update(ALL_METRICS)
            elif name in ALL_METRICS:
                chosen.add(name)
            else:
                raise P2PError(f"unknown metric '{name}'{did_you_mean(name, (*ALL_METRICS, 'all'))}; "
                               f"choose from {', '.join(ALL_METRICS)} or all")
    if not chosen:
        raise P2PError("--metrics needs at least one metric")
    return tuple(m for m in ALL_METRICS if m in chosen)


@dataclass
class EvalOptions:
    """Everything ``evaluate`` can be told besides the models.

    ``dataset``/``data_root``/``batch_size``/``workers``/``precision`` left as ``None`` come
    from the reference run's config.yaml (the teacher's, else the first model's).
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    taus: tuple[float, ...] = DEFAULT_TAUS
    split: str = "test"
    fidelity: str = "paper"
    dataset: str | None = None
    data_root: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    precision: str | None = None
    device: str = "auto"
    use_cache: bool = True
    noise_seed: int = 0
    headline_tau: float | None = None
    chance: bool = False
    chance_seed: int = 0
    save_activations: Path | None = None

    def check(self) -> None:
        """Validate every option (one-line :class:`~p2p_cli.errors.P2PError`) and normalise
        ``metrics`` and ``taus`` in place."""
        if self.split not in ("test", "train"):
            raise P2PError(f"--split must be test or train, got '{self.split}'")
        if self.fidelity not in ("paper", "reference"):
            raise P2PError(f"--fidelity must be paper or reference, got '{self.fidelity}'")
        if self.batch_size is not None and self.batch_size < 1:
            raise P2PError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise P2PError(f"--workers must be ≥ 0, got {self.workers}")
        for flag, seed in (("--noise-seed", self.noise_seed), ("--seed", self.chance_seed)):
            if not 0 <= seed <= SEED_MAX:
                raise P2PError(f"{flag} must be in [0, {SEED_MAX}], got {seed}")
        if self.precision is not None and self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise P2PError(f"--precision must be auto, bf16, fp16 or fp32, got '{self.precision}'")
        if self.headline_tau is not None and (math.isnan(self.headline_tau) or self.headline_tau < 0):
            raise P2PError(f"--headline-tau must be ≥ 0 (or inf), got {self.headline_tau}")
        self.metrics = parse_metrics(self.metrics)
        self.taus = parse_taus(list(self.taus))
        if self.headline_tau is not None and self.headline_tau not in self.taus:
            raise P2PError(f"--headline-tau {tau_key(self.headline_tau)} is not among --tau "
                           f"{' '.join(tau_key(t) for t in self.taus)}")
