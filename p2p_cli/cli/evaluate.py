"""`p2p evaluate`: accuracy and interpretability-transfer metrics (AAP, AJS, PMS) in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.command import variadic_command
from p2p_cli.cli.common import write_json_report
from p2p_cli.cli.evaluate_table import print_report
from p2p_cli.cli.options import Common, JsonOpt, ModelsOpt, RunData, with_options
from p2p_cli.evaluation.options import ALL_METRICS

# --model, --metrics and --tau take several values after one flag
EvaluateCommand = variadic_command("--model", "-m", "--metrics", "--tau")


@with_options
def evaluate_cmd(
    model: ModelsOpt = None,
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="teacher REF (default: the teacher "
                                                "recorded in the students' runs)")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="baseline student for the Δ columns "
                                                 "(default: a model distilled with --method none)")] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", help=f"any of {', '.join(ALL_METRICS)}, or all "
                                                      "(default: acc aap ajs pms)")] = None,
    tau: Annotated[list[str] | None, typer.Option("--tau", help="AAP/AJS thresholds τ, 'inf' allowed (default: "
                                                  "0.01 0.1 0.2 0.45 1 3 5 inf)", metavar="FLOAT")] = None,
    split: Annotated[str, typer.Option("--split", help="the images to evaluate on", metavar="test|train")] = "test",
    fidelity: Annotated[str, typer.Option("--fidelity", help="an image where neither model has an active patch "
                                          "counts 1 (paper) or 0 (reference: the public code) in AJS",
                                          metavar="paper|reference")] = "paper",
    json_path: JsonOpt = None,
    save_activations: Annotated[Path | None, typer.Option("--save-activations", help="write each model's "
                                                          "argmin/min_dist/labels/logits as safetensors "
                                                          "into this folder")] = None,
    headline_tau: Annotated[str | None, typer.Option("--headline-tau", help="τ of the summary table (default: the "
                                                     "smallest τ with an active teacher patch in ≥90% of images)",
                                                     metavar="FLOAT")] = None,
    noise_seed: Annotated[int, typer.Option("--noise-seed", help="seed of the stability noise")] = 0,
    chance: Annotated[bool, typer.Option("--chance", help="also report the teacher against itself on shuffled "
                                         "images (chance level of AJS and PMS)")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="reuse/store activations in "
                                        "WORKDIR/.cache/activations")] = True,
    *,
    data: RunData,
    common: Common,
) -> None:
    """Accuracy and the interpretability-transfer metrics of models against their teacher.

    AAP (Eq. 7), AJS (Eq. 8) and PMS (Algorithm 1) of Proto2Proto (Keswani et al., CVPR 2022); with
    --metrics all also consistency and stability (Huang et al., ICCV 2023). One forward pass per model,
    cached per weights, dataset and split. The teacher is always the first row (AJS = PMS = 1); Δ against
    the baseline student in parentheses, as in the paper's Table 2.

    Examples:
      p2p evaluate --model baseline s
      p2p evaluate -m baseline s -t t --metrics acc ajs pms --tau 0.1 1 inf
      p2p evaluate --model s --metrics all --json eval.json
    """
    from p2p_cli import api
    from p2p_cli.runtime.distributed import launched_as_main

    report = api.evaluate(model or [], teacher=teacher, baseline=baseline, metrics=metrics, taus=tau, split=split,
                          fidelity=fidelity, dataset=data.dataset, data_root=data.data_root,
                          batch_size=data.batch_size, workers=data.workers, precision=data.precision,
                          save_activations=save_activations, headline_tau=headline_tau or None,
                          noise_seed=noise_seed, chance=chance, cache=cache, seed=common.seed,
                          workdir=common.workdir, device=common.device, quiet=common.quiet, verbose=common.verbose)
    if not launched_as_main():  # the other ranks of a torchrun job print nothing
        return
    write_json_report(json_path, report, common.quiet)
    print_report(report)
