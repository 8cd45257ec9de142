"""Which runs an evaluation compares: the teacher, the baseline and the students.

The rows of the Proto2Proto comparison (Keswani et al., CVPR 2022, Table 2): the teacher
first (AJS = PMS = 1 against itself), then the given models; one of them is the baseline the
Δ columns refer to. Each row is a :class:`~p2p_cli.models.runs.LoadedRun` whose ``role`` is
set here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2p_cli.errors import P2PError
from p2p_cli.io.rundir import RunDir, resolve_ref
from p2p_cli.models.runs import LoadedRun, load_run_dir

__all__ = ["same_run", "select_models"]


def same_run(a: RunDir, b: RunDir) -> bool:
    """Whether two run directories are the same folder (symlinks resolved)."""
    try:
        return a.path.resolve() == b.path.resolve()
    except OSError:
        return a.path == b.path


def _resolve_recorded_teacher(rec: dict[str, Any], workdir: Path) -> RunDir:
    path = rec.get("path")
    if path and Path(path).is_dir() and (Path(path) / "model.safetensors").is_file():
        return RunDir(Path(path))
    name = rec.get("name")
    if name:
        return resolve_ref(str(name), workdir)
    raise P2PError("a student records its teacher without a usable path or name; pass --teacher REF")


def select_models(model_refs: Sequence[str], teacher_ref: str | None, baseline_ref: str | None, workdir: Path,
                  notes: list[str]) -> tuple[list[LoadedRun], LoadedRun, LoadedRun | None]:
    """Resolve the rows: the teacher first, then the given models in order (duplicates dropped).

    Without ``teacher_ref`` the teacher recorded in the students' runs is used (all must agree);
    if none records one, the first model is the reference. The baseline is ``baseline_ref``, or
    the first non-teacher model distilled with ``--method none``, or else the first non-teacher
    model trained by ``train-teacher``.
    """
    if not model_refs and not teacher_ref:
        raise P2PError("evaluate needs at least one model: --model REF (a run directory or a run name)")
    runs: list[RunDir] = []
    for ref in model_refs:
        run = resolve_ref(ref, workdir)
        if not any(same_run(run, r) for r in runs):
            runs.append(run)
    loaded = [load_run_dir(r) for r in runs]
    if teacher_ref:
        t_run = resolve_ref(teacher_ref, workdir)
    else:
        recorded: dict[str, dict[str, Any]] = {}
        for em in loaded:
            rec = em.recorded_teacher
            if rec is not None:
                recorded[str(rec.get("path") or rec.get("name"))] = rec
        if len(recorded) > 1:
            names = sorted(str(r.get("name")) for r in recorded.values())
            raise P2PError(f"the models were distilled from different teachers ({', '.join(names)}); "
                           "pass --teacher REF")
        if recorded:
            t_run = _resolve_recorded_teacher(next(iter(recorded.values())), workdir)
        else:
            t_run = loaded[0].run
            if len(loaded) > 1:
                notes.append(f"no teacher recorded in the runs and no --teacher: '{t_run.name}' is the reference")
    teacher = next((em for em in loaded if same_run(em.run, t_run)), None)
    if teacher is None:
        teacher = load_run_dir(t_run)
    others = [em for em in loaded if em is not teacher]
    teacher.role = "teacher"
    for em in others:
        if em.weights == teacher.weights:
            notes.append(f"'{em.name}' has exactly the teacher's weights (hash {em.weights})")
        rec = em.recorded_teacher
        if rec and rec.get("weights_hash") and rec["weights_hash"] != teacher.weights:
            notes.append(f"'{em.name}' was distilled from a teacher with weights hash {rec['weights_hash']}, but "
                         f"'{teacher.name}' now has {teacher.weights} (retrained or overwritten?)")
    baseline = None
    if baseline_ref:
        b_run = resolve_ref(baseline_ref, workdir)
        baseline = next((em for em in others if same_run(em.run, b_run)), None)
        if baseline is None:
            if same_run(b_run, teacher.run):
                raise P2PError(f"--baseline '{baseline_ref}' is the teacher; choose a student")
            baseline = load_run_dir(b_run)
            others.append(baseline)
    else:
        baseline = next((em for em in others if em.method == "none"), None)
        if baseline is None:
            baseline = next((em for em in others if em.config_raw.get("command") == "train-teacher"), None)
    if baseline is not None:
        baseline.role = "baseline"
    for em in others:
        if em.role == "model":
            em.role = "student"
    # unique row labels (two runs of the same name in different folders)
    seen: dict[str, int] = {}
    for em in [teacher, *others]:
        if em.name in seen:
            seen[em.name] += 1
            em.name = f"{em.name}#{seen[em.name]}"
        else:
            seen[em.name] = 1
    return [teacher, *others], teacher, baseline


