"""`p2p prune`: ProtoPShare merge-pruning or ProtoPNet k-NN pruning of a trained run (SPEC §7)."""

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.common import DeviceOpt, QuietOpt, SeedOpt, VerboseOpt, WorkdirOpt, reporter
from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.io.config import config_from_dict
from p2p_cli.io.rundir import resolve_ref
from p2p_cli.runtime.device import make_runtime
from p2p_cli.workflows.prune import PruneOptions, prune


def prune_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="run to prune: a path, or a run name in the workdir")],
    target: Annotated[int | None, typer.Option("--target", "-n", help="prototypes to keep (protopshare)")] = None,
    step: Annotated[int | None, typer.Option("--step", help="prototypes merged away per round (default: 10 % "
                                             "of the model's prototypes)")] = None,
    method: Annotated[str, typer.Option("--method", help="protopshare (merge) | knn (ProtoPNet's k-NN test)",
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
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run of that name")] = False,
    data_root: Annotated[str | None, typer.Option("--data-root", help="the dataset, when it moved since "
                                                  "training (default: the run's data_root)")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON")] = None,
    workdir: WorkdirOpt = Path("runs"),
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Prune a trained run's prototypes into a new run (the source is never modified).

    protopshare (default): merge the prototypes whose min-distance profiles over the training set are
    closest, --step per round until --target remain; a merged prototype keeps the survivor's vector,
    sums the last-layer columns and serves the union of the classes; the last layer is fine-tuned after
    each round. knn: drop prototypes with fewer than --knn-min own-class images among their --knn-k
    nearest, then fine-tune the last layer.
    """
    opts = PruneOptions(method=method, target=target, step=step, fine_tune_epochs=fine_tune_epochs,
                        feature_epochs=feature_epochs, knn_k=knn_k, knn_min=knn_min)
    source = resolve_ref(model, workdir)
    src_cfg = config_from_dict(source.read_config(), source=str(source.config_path))
    rt = make_runtime(device, src_cfg.precision, src_cfg.channels_last)
    if rt.distributed:
        raise P2PError("p2p prune runs in one process; start it without torchrun")
    rep = reporter(verbose, quiet, rt.rank)
    run, summary = prune(str(source.path), workdir=workdir, name=name, opts=opts, rt=rt, reporter=rep,
                         overwrite=overwrite, data_root=data_root, seed=seed)
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
    typer.echo(f"{run.path}: {summary['prototypes_before']} → {summary['prototypes_after']} prototypes, "
               f"test accuracy {summary['test_acc_before']:.3f} → {summary['test_acc_after']:.3f} "
               f"({summary['seconds']:.0f} s)")
