"""Transfer of the head-on-stomach attack from a teacher to its Proto2Proto students.

The teacher's adversarial images (same images, same ε) are shown to each student: how often the
student's explanation for the same prototype index moves when the teacher's does (Proto2Proto
aligns prototypes index-wise, Keswani et al. 2022, Eq. 5), against the same rate under random
sign noise of the same budget. Teacher and students are judged by the same function on the same
batches (:func:`moved_on`, S from each model's own clean image), so a copy of the teacher agrees
with it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from p2p_cli.attacks.head_on_stomach import StomachBatch
from p2p_cli.attacks.pixels import forward_pixels
from p2p_cli.attacks.regions import best_match_region, explanation_moved
from p2p_cli.models.protopnet import ProtoPNet, log_similarity
from p2p_cli.runtime.device import Runtime


@torch.no_grad()
def moved_on(model: ProtoPNet, clean: torch.Tensor, perturbed: torch.Tensor, prototypes: torch.Tensor,
             rt: Runtime, percentile: float) -> torch.Tensor:
    """Whether prototype ``prototypes[b]``'s best match leaves its clean region S on ``perturbed``.

    clean, perturbed: (B, 3, S, S) in [0, 1]; prototypes: long (B,). Returns bool (B,)."""
    size = clean.shape[-1]
    ar = torch.arange(len(prototypes), device=clean.device)
    maps = forward_pixels(model, clean, rt).distances.float()[ar, prototypes]
    region = best_match_region(maps, size, percentile)
    sims = log_similarity(forward_pixels(model, perturbed, rt).distances.float()[ar, prototypes])
    return explanation_moved(sims, region)


def transfer(teacher: ProtoPNet, students: Mapping[str, ProtoPNet], clean: torch.Tensor, batch: StomachBatch,
             rt: Runtime, *, eps: float, percentile: float, batch_size: int, generator: torch.Generator,
             progress: Callable[..., None] | None = None) -> dict[str, dict[str, Any]]:
    """The transfer view of the teacher's attack ``batch`` on clean images (N, 3, S, S).

    Per batch of ``batch_size`` images: whether the teacher's and each student's explanation of
    the attacked prototype moves on the teacher's adversarial images, and on the clean images plus
    random sign noise ``ε · sign(u) · mask`` (u uniform in [−1, 1] from ``generator``, the same
    pixels the attack was allowed to change). Returns ``{student: entry}``, entries as in
    :func:`transfer_entry`. ``progress(B)`` is called per batch.
    """
    teacher_moved: list[torch.Tensor] = []
    teacher_random: list[torch.Tensor] = []
    moved: dict[str, list[torch.Tensor]] = {name: [] for name in students}
    moved_random: dict[str, list[torch.Tensor]] = {name: [] for name in students}
    for lo in range(0, len(clean), batch_size):
        sl = slice(lo, lo + batch_size)
        c, a, p = clean[sl], batch.adv[sl], batch.prototype[sl]
        # re-evaluated exactly like the students' (same batches), so a copy of the teacher agrees
        teacher_moved.append(moved_on(teacher, c, a, p, rt, percentile))
        noise = torch.rand(c.shape, generator=generator).to(c.device) * 2 - 1
        randomised = (c + eps * noise.sign() * batch.mask[sl]).clamp(0, 1)
        teacher_random.append(moved_on(teacher, c, randomised, p, rt, percentile))
        for name, model in students.items():
            moved[name].append(moved_on(model, c, a, p, rt, percentile))
            moved_random[name].append(moved_on(model, c, randomised, p, rt, percentile))
        if progress is not None:
            progress(len(p))
    t, t_random = torch.cat(teacher_moved), torch.cat(teacher_random)
    return {name: transfer_entry(t, t_random, torch.cat(moved[name]), torch.cat(moved_random[name]))
            for name in students}


def transfer_entry(teacher_moved: torch.Tensor, teacher_moved_random: torch.Tensor, student_moved: torch.Tensor,
                   student_moved_random: torch.Tensor) -> dict[str, Any]:
    """Counts and rates over the N attacked images from four bool (N,) flags: ``attacked``,
    ``teacher_moved``, ``student_moved_with_teacher``, ``transfer_rate`` (student moved | teacher
    moved), and the fractions ``student_moved``, ``student_moved_random``, ``teacher_moved_random``
    (None where the denominator is 0)."""

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    attacked = len(teacher_moved)
    t = int(teacher_moved.sum())
    both = int((student_moved & teacher_moved).sum())
    return {"attacked": attacked, "teacher_moved": t, "student_moved_with_teacher": both,
            "transfer_rate": rate(both, t),
            "student_moved": rate(int(student_moved.sum()), attacked),
            "student_moved_random": rate(int(student_moved_random.sum()), attacked),
            "teacher_moved_random": rate(int(teacher_moved_random.sum()), attacked)}
