"""`p2p quickstart`: the whole Proto2Proto pipeline on the built-in data, ending in a report."""

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.common import DeviceOpt, QuietOpt, VerboseOpt, WorkdirOpt, reporter
from p2p_cli.runtime.device import make_runtime
from p2p_cli.workflows.presets import PRESETS, get_preset
from p2p_cli.workflows.quickstart import QuickstartOptions, quickstart


def quickstart_cmd(
    preset: Annotated[str, typer.Option("--preset", help=f"{' | '.join(PRESETS)}: fast takes ~8 minutes "
                                        "on a 2-core CPU with AMX (bf16), ~18 with AVX2 only (fp32); full doubles "
                                        "data and epochs; tiny is a smoke test")
    ] = "fast",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="repeat the three trainings with N seeds; "
                                       "the report gives mean ± std")] = 1,
    ablations: Annotated[bool, typer.Option("--ablations", help="add the paper's Table 4 rows "
                                            "(L_ppc only, L_global only, head init/frozen, no L_ppnet)")] = False,
    workdir: WorkdirOpt = Path("runs"),
    device: DeviceOpt = "auto",
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The whole Proto2Proto pipeline on the built-in synthetic data, ending in a report.

    Trains a teacher, a baseline student and a Proto2Proto student, prunes the Proto2Proto student,
    evaluates and explains them all, and writes WORKDIR/report/ (report.md, report.html, report.json).

    Finished runs are reused and interrupted ones resumed: run it again after an interruption.
    """
    cfg = get_preset(preset)["config"]
    rt = make_runtime(device, cfg["precision"], cfg["channels_last"])
    rep = reporter(verbose, quiet, rt.rank)
    if rt.device.type == "cpu" and rt.amp_dtype is None and cfg["precision"] == "auto":
        rep.info("[dim]this CPU has neither AMX nor AVX512-BF16: training runs in fp32, about 2-3× slower than "
                 "bf16 on a CPU that has them (see README, Performance)[/]")
    report = quickstart(QuickstartOptions(workdir=workdir, preset=preset, seeds=seeds, ablations=ablations),
                        rt, rep)
    if rt.is_main:
        from p2p_cli.workflows.evaluate import print_report

        if not quiet:
            print_report(report)
        typer.echo(report["verdict"]["text"])
        typer.echo(f"report: {workdir / 'report' / 'report.html'} (also report.md, report.json); "
                   f"{report['timings']['seconds']['total']:.0f} s")
