"""`p2p robustness`: do the explanations survive crafted noise and JPEG? (Hoffmann et al., 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.attacks.options import ATTACKS, REGIONS
from p2p_cli.cli.command import variadic_command
from p2p_cli.cli.common import to_stdout, write_json_report
from p2p_cli.cli.options import Common, JsonOpt, ModelsOpt, RunData, only, with_options
from p2p_cli.cli.robustness_table import print_report

RobustnessCommand = variadic_command("--model", "-m")  # --model a b c


@with_options
def robustness_cmd(
    model: ModelsOpt = None,
    attack: Annotated[str, typer.Option("--attack", help="head-on-stomach (PGD moves a prototype's best match, "
                                        "paper §3) or jpeg (clean vs JPEG-compressed, §4)",
                                        metavar="|".join(ATTACKS))] = "head-on-stomach",
    eps: Annotated[str, typer.Option("--eps", help="L∞ budget in [0, 1] pixel units, e.g. 8/255",
                                     metavar="FLOAT")] = "8/255",
    step: Annotated[str, typer.Option("--step", help="PGD step size in pixel units", metavar="FLOAT")] = "2/255",
    iters: Annotated[int, typer.Option("--iters", help="PGD steps per prototype")] = 40,
    top_k: Annotated[int, typer.Option("--top-k", help="prototypes tried per image (head-on-stomach); size of the "
                                       "compared top-k sets (jpeg)")] = 5,
    images: Annotated[int | None, typer.Option("--images", help="head-on-stomach: correctly classified test "
                                               "images to attack (default 200); jpeg: test images (default all)")
                      ] = None,
    region: Annotated[str, typer.Option("--region", help="where δ may be non-zero: target (the pixels of the "
                                        "cells outside the original best match, S_noisy) or image (anywhere, "
                                        "Eq. 3 literally)", metavar="|".join(REGIONS))] = "target",
    adv_iters: Annotated[int, typer.Option("--adv-iters", help="PGD steps of the cross-entropy attack behind the "
                                           "adversarial accuracy (0: skip)")] = 10,
    quality: Annotated[int, typer.Option("--quality", help="jpeg: JPEG quality (1-100)")] = 20,
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="transfer view: attack this teacher and "
                                                "show its adversarial images to the --model students")] = None,
    figures: Annotated[int, typer.Option("--figures", help="head-on-stomach: attacked images shown in the "
                                         "before/after figure per model (0: none)")] = 4,
    out: Annotated[Path | None, typer.Option("--out", help="folder for the PNG figures (default: "
                                             "WORKDIR/robustness/ATTACK)")] = None,
    json_path: JsonOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per batch")] = 32,
    *,
    data: Annotated[RunData, only("dataset", "data_root", "precision")],
    common: Common,
) -> None:
    """Robustness of the explanations (Hoffmann et al. 2021, "This Looks Like That... Does it?").

    head-on-stomach: PGD (Eq. 2-3) moves a top-k prototype's best match out of its original region S.
    jpeg: prototype similarities on clean vs JPEG-compressed test images, with histograms. --teacher:
    how often the students' explanations move on the teacher's adversarial images.

    Examples:
      p2p robustness --model teacher --images 50
      p2p robustness --teacher teacher --model p2p --images 50
      p2p robustness --model teacher p2p --attack jpeg --json jpeg.json
    """
    from p2p_cli import api

    report = api.attack(model or [], attack=attack, eps=eps, step=step, iters=iters, top_k=top_k, images=images,
                        region=region, adv_iters=adv_iters, quality=quality, teacher=teacher, figures=figures, out=out,
                        batch_size=batch_size, dataset=data.dataset, data_root=data.data_root,
                        precision=data.precision, seed=common.seed, workdir=common.workdir, device=common.device,
                        quiet=common.quiet, verbose=common.verbose)
    write_json_report(json_path, report, common.quiet)
    if to_stdout(json_path):  # stdout carries the JSON alone: the tables go to stderr
        from p2p_cli.runtime.reporter import make_console

        if not common.quiet:
            print_report(report, make_console(stderr=True))
        return
    print_report(report)
