"""`p2p prune`: ProtoPShare merge-pruning or ProtoPNet k-NN pruning of a trained run."""

from __future__ import annotations

from typing import Annotated

import typer

from p2p_cli.cli.options import Common, JsonOpt, OverwriteOpt, RunData, only, with_options
from p2p_cli.io.atomic import atomic_write_json


@with_options
def prune_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="run to prune: a path, or a run name in the workdir")],
    target: Annotated[int | None, typer.Option("--target", "-n", help="prototypes to keep (protopshare)")] = None,
    step: Annotated[int | None, typer.Option("--step", help="protopshare: each step's threshold is the STEP-th "
                                             "smallest nearest-neighbour dissimilarity, so at most STEP prototypes "
                                             "merge per step (default: 10 % of the model's prototypes)")] = None,
    distance: Annotated[str, typer.Option("--distance", help="protopshare: dissimilarity of the prototypes' "
                                          "activation vectors over the training set (data) or of the prototype "
                                          "vectors (vectors)", metavar="data|vectors")] = "data",
    method: Annotated[str, typer.Option("--method", help="protopshare (merge) or knn (ProtoPNet's k-NN test)",
                                        metavar="protopshare|knn")] = "protopshare",
    fine_tune_epochs: Annotated[int | None, typer.Option("--fine-tune-epochs", help="last-layer epochs after "
                                                         "each round (default: the run's last_layer_epochs)")] = None,
    feature_epochs: Annotated[int, typer.Option("--feature-epochs", help="protopshare: also train add-on and "
                                                "prototypes (backbone frozen) this many epochs per round, then "
                                                "push them again")] = 0,
    knn_k: Annotated[int, typer.Option("--knn-k", help="knn: neighbours looked at")] = 6,
    knn_min: Annotated[int, typer.Option("--knn-min", help="knn: keep a prototype with at least this many "
                                         "own-class neighbours")] = 3,
    name: Annotated[str | None, typer.Option("--name", help="new run name (default: SOURCE-pruned)")] = None,
    overwrite: OverwriteOpt = False,
    json_path: JsonOpt = None,
    *,
    data: Annotated[RunData, only("data_root")],
    common: Common,
) -> None:
    """Prune a trained run's prototypes into a new run (the source is never modified).

    protopshare (default, Rymarczyk et al., KDD 2021): in each step, threshold = the --step-th smallest
    nearest-neighbour dissimilarity (of the prototypes' min distances over the training set); visiting
    the prototypes in order, every prototype within it of the visited one is merged into it; steps
    repeat until --target remain. A merged prototype keeps the survivor's vector, sums the last-layer
    columns and serves the union of the classes; the last layer is fine-tuned after each step.
    knn (Chen et al., NeurIPS 2019): drop prototypes with fewer than --knn-min own-class images among
    their --knn-k nearest, then fine-tune the last layer.

    Examples:
      p2p prune --model s --target 50
      p2p prune --model s --target 50 --step 5 --fine-tune-epochs 30 --name s-50
      p2p prune --model s --method knn --knn-min 3
    """
    from p2p_cli import api

    outcome = api.prune(model, target=target, step=step, method=method, distance=distance,
                        fine_tune_epochs=fine_tune_epochs, feature_epochs=feature_epochs, knn_k=knn_k,
                        knn_min=knn_min, name=name, overwrite=overwrite, data_root=data.data_root,
                        workdir=common.workdir, device=common.device, seed=common.seed, quiet=common.quiet,
                        verbose=common.verbose)
    if not outcome.is_main:  # the other ranks of a torchrun job print nothing
        return
    summary = outcome.summary
    rep = common.reporter()
    shown = ["round", "stage", "prototypes", "merged", "removed", "threshold", "ce", "train_acc", "test_acc",
             "seconds"]
    rounds = summary["rounds"]
    rep.table("rounds", rounds, [c for c in shown if any(c in r for r in rounds)])
    rep.table("classes", summary["classes"], ["class", "before", "after", "merged_away", "removed", "shared"])
    rep.table("summary", [{"": "prototypes", "before": summary["prototypes_before"],
                           "after": summary["prototypes_after"]},
                          {"": "test accuracy", "before": summary["test_acc_before"],
                           "after": summary["test_acc_after"]}], ["", "before", "after"])
    if json_path is not None:
        atomic_write_json(json_path, summary)
    typer.echo(f"{outcome.path}: {summary['prototypes_before']} → {summary['prototypes_after']} prototypes, "
               f"test accuracy {summary['test_acc_before']:.3f} → {summary['test_acc_after']:.3f} "
               f"({summary['seconds']:.0f} s)")
