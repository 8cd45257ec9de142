"""``p2p robustness``: do the explanations survive crafted noise and JPEG? (Hoffmann et al. 2021,
"This Looks Like That... Does it?").

Orchestration only: load the runs, pick the dataset, run one experiment per model, write the
figures and return the JSON-ready report. The algorithms live in :mod:`p2p_cli.attacks`:

* head on stomach (§3, Eq. 2-3, App. F.1): :mod:`~p2p_cli.attacks.head_on_stomach` (the attack),
  :mod:`~p2p_cli.attacks.stomach_experiment` (one model's numbers) and
  :mod:`~p2p_cli.attacks.transfer` (``--teacher``: the teacher's adversarial images shown to its
  students);
* JPEG (§4, App. D.2): :mod:`~p2p_cli.attacks.jpeg`;
* FGSM training (the App. F.1 remedy, Wong et al. 2020): :mod:`~p2p_cli.attacks.fgsm`, called by
  the trainer when ``adversarial: fgsm``.

Everything works on images in [0, 1] pixel space (:mod:`~p2p_cli.attacks.pixels`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2p_cli.attacks.head_on_stomach import AttackSettings
from p2p_cli.attacks.jpeg import JpegSettings, run_jpeg
from p2p_cli.attacks.options import ATTACKS
from p2p_cli.attacks.stomach_experiment import run_head_on_stomach
from p2p_cli.attacks.testset import raw_test_set
from p2p_cli.data.images import ImageDataset
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.atomic import atomic_write_bytes
from p2p_cli.io.config import with_overrides
from p2p_cli.models.runs import LoadedRun, load_run
from p2p_cli.runtime.device import Runtime, make_runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.viz.robustness import jpeg_histograms, stomach_figure


@dataclass(frozen=True)
class RobustnessOptions:
    """What ``p2p robustness`` was asked for (``teacher``: the transfer view; ``out``: the figure
    folder, None for no figures; ``dataset``/``data_root``/``precision``: overrides of the run's)."""

    attack: str = "head-on-stomach"
    stomach: AttackSettings = field(default_factory=AttackSettings)
    jpeg: JpegSettings = field(default_factory=JpegSettings)
    teacher: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    precision: str | None = None
    device: str = "auto"
    out: Path | None = None


def run_robustness(model_refs: Sequence[str], *, workdir: Path, options: RobustnessOptions,
                   reporter: Reporter | None = None, rt: Runtime | None = None) -> dict[str, Any]:
    """Run ``options.attack`` on every model; write the figures; return the JSON-ready report.

    Shape: ``{"attack", "dataset", "device", "precision", "settings", "models": {NAME: entry},
    "figures": [paths], "seconds"}`` (+ ``"teacher"`` in the transfer view), entries as returned
    by :func:`~p2p_cli.attacks.stomach_experiment.run_head_on_stomach` /
    :func:`~p2p_cli.attacks.jpeg.run_jpeg` without their private ``_`` keys.
    """
    t0 = time.perf_counter()
    opts = options
    _check(model_refs, opts)
    rep = reporter or Reporter(enabled=False)
    runs = load_runs(([opts.teacher] if opts.teacher else []) + list(model_refs), workdir)
    if rt is None:
        raw = runs[0].config_raw
        rt = make_runtime(opts.device, opts.precision or str(raw.get("precision", "auto")),
                          channels_last=bool(raw.get("channels_last", True)))
    for run in runs:
        _place(run, rt)
    teacher = runs[0] if opts.teacher else None
    students = runs[1:] if teacher else []
    if teacher is not None:
        _check_transfer(teacher, students)
    cfg = with_overrides(next((r.config for r in runs if r.config is not None), None), dataset=opts.dataset,
                         data_root=opts.data_root)
    index = load_dataset_index(cfg)
    for run in runs:
        run.check_classes(index)
    datasets: dict[tuple[int, bool], ImageDataset] = {}

    def test_set(run: LoadedRun) -> ImageDataset:
        key = (run.image_size, run.crop_bbox)
        if key not in datasets:
            datasets[key] = raw_test_set(index, *key)
        return datasets[key]

    report: dict[str, Any] = {"attack": opts.attack, "dataset": index.name, "device": str(rt.device),
                              "precision": str(rt.amp_dtype or "fp32"), "models": {}}
    if opts.attack == "head-on-stomach":
        st = opts.stomach
        report["settings"] = {"eps": st.eps, "step": st.step, "iters": st.iters, "top_k": st.top_k,
                              "images": st.images, "region": st.region, "adv_iters": st.adv_iters,
                              "percentile": st.percentile, "seed": st.seed}
        for run in runs:
            report["models"][run.name] = run_head_on_stomach(
                run, test_set(run), rt, st, rep, index=index, students=students if run is teacher else ())
        if teacher is not None:
            report["teacher"] = teacher.name
    else:
        js = opts.jpeg
        report["settings"] = {"quality": js.quality, "top_k": js.top_k, "images": js.images, "seed": js.seed}
        for run in runs:
            report["models"][run.name] = run_jpeg(run, test_set(run), rt, js, rep)
    report["figures"] = write_figures(report, opts) if opts.out is not None else []
    for entry in report["models"].values():
        for key in [k for k in entry if k.startswith("_")]:
            del entry[key]
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _check(model_refs: Sequence[str], opts: RobustnessOptions) -> None:
    """One-line errors for an unknown attack, bad settings or a missing model/student."""
    if opts.attack not in ATTACKS:
        raise P2PError(f"unknown attack '{opts.attack}'{did_you_mean(opts.attack, ATTACKS)}; choose from "
                       f"{', '.join(ATTACKS)}")
    (opts.stomach if opts.attack == "head-on-stomach" else opts.jpeg).check()
    if not model_refs and not opts.teacher:
        raise P2PError("robustness needs at least one model: --model REF (a run directory or a run name)")
    if opts.teacher and opts.attack != "head-on-stomach":
        raise P2PError("--teacher (the transfer view) applies to --attack head-on-stomach")


def load_runs(refs: Sequence[str], workdir: Path) -> list[LoadedRun]:
    """The ProtoPNet runs ``refs`` in order, each run directory once; repeated names become
    ``name#2``, ``name#3``, … (the report's keys). On the CPU until :func:`_place`."""
    runs: list[LoadedRun] = []
    seen: set[Path] = set()
    for ref in refs:
        run = load_run(ref, workdir)
        if run.meta.get("arch") != "protopnet":
            raise P2PError(f"'{run.run.path}' is not a ProtoPNet run (arch {run.meta.get('arch')})")
        key = run.run.path.resolve()
        if key in seen:
            continue
        seen.add(key)
        runs.append(run)
    names: dict[str, int] = {}
    for run in runs:
        if run.name in names:
            names[run.name] += 1
            run.name = f"{run.name}#{names[run.name]}"
        else:
            names[run.name] = 1
    return runs


def _place(run: LoadedRun, rt: Runtime) -> None:
    """Hash the weights (for the report), then move the model to ``rt.device``, frozen, in eval mode.

    With ``rt.channels_last`` the whole model (not only the backbone) takes the channels_last
    layout: the add-on convolutions then run in that layout too, and the numbers match earlier
    reports to the last bit."""
    _ = run.weights  # cached now, from the CPU copy
    run.to(rt.device, frozen=True)
    if rt.channels_last:
        run.model.to(memory_format=torch.channels_last)


def _check_transfer(teacher: LoadedRun, students: Sequence[LoadedRun]) -> None:
    """The transfer view needs students with index-aligned prototypes and the teacher's input size."""
    if not students:
        raise P2PError("the transfer view needs students: --teacher REF --model STUDENT [--model ...]")
    for s in students:
        if s.model.num_prototypes != teacher.model.num_prototypes:
            raise P2PError(f"transfer needs index-aligned prototypes: teacher '{teacher.name}' has "
                           f"{teacher.model.num_prototypes}, student '{s.name}' {s.model.num_prototypes}")
        if s.image_size != teacher.image_size:
            raise P2PError(f"transfer needs the same input size: teacher '{teacher.name}' "
                           f"{teacher.image_size} px, student '{s.name}' {s.image_size} px")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_figures(report: dict[str, Any], opts: RobustnessOptions) -> list[str]:
    """PNG figures into ``opts.out``: before/after rows (head on stomach) or histograms (JPEG)."""
    assert opts.out is not None
    paths: list[str] = []
    for name, entry in report["models"].items():
        if report["attack"] == "head-on-stomach":
            examples = entry.get("_figures") or []
            if not examples:
                continue
            png = stomach_figure(examples, title=f"{name}: head on stomach (ε = {opts.stomach.eps * 255:.3g}/255, "
                                                 f"{opts.stomach.iters} steps)")
            path = opts.out / f"head-on-stomach-{_safe(name)}.png"
        else:
            png = jpeg_histograms(entry["_arrays"], name=name, quality=opts.jpeg.quality, top_k=opts.jpeg.top_k)
            path = opts.out / f"jpeg-{_safe(name)}.png"
        atomic_write_bytes(path, png)
        paths.append(str(path))
    return paths
