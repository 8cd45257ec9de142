"""`p2p evaluate`: accuracy and interpretability-transfer metrics (AAP, AJS, PMS) in one table."""

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.common import (
    DeviceOpt,
    QuietOpt,
    SeedOpt,
    VerboseOpt,
    WorkdirOpt,
    reporter,
    variadic_command,
    write_json_report,
)
from p2p_cli.workflows.evaluate import ALL_METRICS, EvalOptions, evaluate_models, parse_taus, print_report

# --model, --metrics and --tau take several values after one flag
EvaluateCommand = variadic_command("--model", "-m", "--metrics", "--tau")


def evaluate_cmd(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="model REF(s): run directories or run "
                                                    "names in the workdir; several may follow one flag")] = None,
    teacher: Annotated[str | None, typer.Option("--teacher", "-t", help="teacher REF (default: the teacher "
                                                "recorded in the students' runs)")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="baseline student for the Δ columns "
                                                 "(default: a model distilled with --method none)")] = None,
    metrics: Annotated[list[str] | None, typer.Option("--metrics", help=f"any of {', '.join(ALL_METRICS)}, or all "
                                                      "(default: acc aap ajs pms)")] = None,
    tau: Annotated[list[str] | None, typer.Option("--tau", help="AAP/AJS thresholds τ, 'inf' allowed (default: "
                                                  "0.01 0.1 0.2 0.45 1 3 5 inf)")] = None,
    split: Annotated[str, typer.Option("--split", help="test|train")] = "test",
    fidelity: Annotated[str, typer.Option("--fidelity", help="paper|reference: an image where neither model has "
                                          "an active patch counts 1 (paper) or 0 (public code) in AJS")] = "paper",
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures as JSON")] = None,
    save_activations: Annotated[Path | None, typer.Option("--save-activations", help="write each model's "
                                                          "argmin/min_dist/labels/logits as safetensors "
                                                          "into DIR")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="override the dataset recorded in the run "
                                                "(synthetic|cub|cars|folder)")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="override the dataset root")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="images per forward pass (default: the "
                                                   "run's test_batch_size)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="image-decoding threads (default: the run's "
                                                "workers, at least 1)")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto|bf16|fp16|fp32 autocast of the "
                                                  "backbones (default: the run's)")] = None,
    headline_tau: Annotated[str | None, typer.Option("--headline-tau", help="τ of the summary table (default: the "
                                                     "smallest τ with an active teacher patch in ≥90% of images)")
                            ] = None,
    noise_seed: Annotated[int, typer.Option("--noise-seed", help="seed of the stability noise")] = 0,
    chance: Annotated[bool, typer.Option("--chance", help="also report the teacher against itself on shuffled "
                                         "images (chance level of AJS and PMS)")] = False,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="reuse/store activations in "
                                        "WORKDIR/.cache/activations")] = True,
    workdir: WorkdirOpt = Path("runs"),
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy and the interpretability-transfer metrics AAP, AJS and PMS (SPEC §6) of models vs their teacher.

    One forward pass per model, cached per weights, dataset and split.

    The teacher is always the first row (AJS = PMS = 1); Δ vs the baseline student in parentheses (Table 2).
    """
    h_tau = parse_taus([headline_tau])[0] if headline_tau else None
    opts = EvalOptions(metrics=tuple(metrics or ()) or EvalOptions().metrics, taus=parse_taus(tau), split=split,
                       fidelity=fidelity, dataset=dataset, data_root=data_root, batch_size=batch_size,
                       workers=workers, precision=precision, device=device, use_cache=cache, noise_seed=noise_seed,
                       headline_tau=h_tau, chance=chance, chance_seed=seed or 0, save_activations=save_activations)
    rep = reporter(verbose, quiet)
    report = evaluate_models(model or [], workdir=workdir, teacher=teacher, baseline=baseline, options=opts,
                             reporter=rep)
    write_json_report(json_path, report, quiet)
    print_report(report)
