"""`p2p quickstart`: the whole Proto2Proto pipeline on the built-in data, ending in a report."""

from __future__ import annotations

from typing import Annotated

import typer

from p2p_cli.cli.evaluate_table import print_report
from p2p_cli.cli.options import Common, only, with_options
from p2p_cli.workflows.presets import PRESETS


@with_options
def quickstart_cmd(
    preset: Annotated[str, typer.Option("--preset", metavar="|".join(PRESETS), help="fast takes ~4-8 minutes on a "
                                        "2-core CPU with bf16 (AMX or AVX512-BF16), longer with AVX2 only (fp32); "
                                        "full doubles data and epochs; tiny is a smoke test")] = "fast",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="repeat the three trainings with N seeds; "
                                       "the report gives mean ± std")] = 1,
    ablations: Annotated[bool, typer.Option("--ablations", help="add the paper's Table 4 rows "
                                            "(L_ppc only, L_global only, head init/frozen, no L_ppnet)")] = False,
    *,
    common: Annotated[Common, only("workdir", "device", "verbose", "quiet")],
) -> None:
    """The whole Proto2Proto pipeline on the built-in synthetic data, ending in a report.

    Trains a teacher, a baseline student and a Proto2Proto student, prunes the Proto2Proto student,
    evaluates and explains them all, and writes WORKDIR/report/ (report.md, report.html, report.json).
    Finished runs are reused and interrupted ones resumed: run it again after an interruption.

    Examples:
      p2p quickstart --workdir runs
      p2p quickstart --workdir runs --seeds 3
      p2p quickstart --workdir runs --ablations
    """
    from p2p_cli import api

    result = api.quickstart(workdir=common.workdir, preset=preset, seeds=seeds, ablations=ablations,
                            device=common.device, quiet=common.quiet, verbose=common.verbose)
    if result.is_main:
        report = result.report
        if not common.quiet:
            print_report(report)
        typer.echo(report["verdict"]["text"])
        typer.echo(f"report: {common.workdir / 'report' / 'report.html'} (also report.md, report.json); "
                   f"{report['timings']['seconds']['total']:.0f} s")
