"""`p2p push-prototypes`: project a run's prototypes onto their nearest own-class training patches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.common import DeviceOpt, QuietOpt, SeedOpt, VerboseOpt, WorkdirOpt, reporter
from p2p_cli.io.atomic import atomic_write_json
from p2p_cli.workflows.push import PushRequest, push_run


def push_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="run: a path, its model.safetensors, or a run name in "
                                       "the workdir")],
    dataset: Annotated[str | None, typer.Option("--dataset", help="push onto this dataset kind instead of the "
                                                "run's (cub/cars/folder/synthetic)", rich_help_panel="Data")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="push onto the training images under this "
                                                  "root (e.g. the dataset moved)", rich_help_panel="Data")] = None,
    save_images: Annotated[bool, typer.Option("--save-images/--no-save-images", help="write per prototype the patch, "
                                              "the source with its box and with its heat map to RUN/prototypes/")
                           ] = True,
    name: Annotated[str | None, typer.Option("--name", help="write the pushed model as a new run of this name")
                    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="allow changing the run's weights (when the push "
                                            "moves prototypes) or replacing the --name run")] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="images per batch (default: the "
                                                   "run's test_batch_size)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="DataLoader workers")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto|bf16|fp16|fp32 (default: the run's)")
                         ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the summary as JSON")] = None,
    workdir: WorkdirOpt = Path("runs"),
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Project prototypes onto their nearest own-class training patches and record where they come from.

    SPEC §4: each prototype becomes its nearest add-on patch among the un-augmented training images of
    its class (one pass, vectorised over prototypes) — the trainer's own push.

    Writes RUN/prototypes.json (per prototype: class, source image index/path/sha256, grid location,
    distance before and after, receptive-field box, 95th-percentile activation box) and, with
    --save-images, RUN/prototypes/*.png. A pushed model moves nothing; if the push moves prototypes, the
    weights change: pass --overwrite, or --name NEW for a new run.
    """
    rep = reporter(verbose, quiet)
    req = PushRequest(model=model, workdir=workdir, dataset=dataset, data_root=data_root, save_images=save_images,
                      name=name, overwrite=overwrite, batch_size=batch_size, workers=workers, device=device,
                      precision=precision)
    summary = push_run(req, rep)
    rows = [{k: summary.get(k) for k in ("prototypes", "moved", "unpushed", "max_distance_before",
                                         "distinct_source_images", "test_acc", "push_seconds", "seconds")}]
    rep.table("push", rows, list(rows[0]))
    if json_path:
        atomic_write_json(json_path, summary)
    moved = summary["moved"]
    what = "no prototype moved" if moved == 0 else f"{moved} prototypes moved"
    acc = f", test accuracy {summary['test_acc']:.3f}" if summary.get("test_acc") is not None else ""
    typer.echo(f"{summary['target']}: pushed {summary['prototypes']} prototypes, {what}{acc}; "
               f"wrote prototypes.json" + (" and prototypes/" if save_images else ""))
