"""`p2p push-prototypes`: project a run's prototypes onto their nearest own-class training patches."""

from __future__ import annotations

from typing import Annotated

import typer

from p2p_cli.cli.options import Common, JsonOpt, RunData, with_options
from p2p_cli.io.atomic import atomic_write_json


@with_options
def push_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="run: a path, its model.safetensors, or a run name in "
                                       "the workdir")],
    save_images: Annotated[bool, typer.Option("--save-images/--no-save-images", help="write per prototype the patch, "
                                              "the source with its box and with its heat map to RUN/prototypes/")
                           ] = True,
    name: Annotated[str | None, typer.Option("--name", help="write the pushed model as a new run of this name")
                    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="allow changing the run's weights (when the push "
                                            "moves prototypes) or replacing the --name run")] = False,
    json_path: JsonOpt = None,
    *,
    data: RunData,
    common: Common,
) -> None:
    """Project prototypes onto their nearest own-class training patches and record where they come from.

    Each prototype becomes its nearest add-on patch among the un-augmented training images of its class
    (ProtoPNet's push, Chen et al., NeurIPS 2019: one pass, vectorised over prototypes) — the trainer's
    own push.

    Writes RUN/prototypes.json (per prototype: class, source image index/path/sha256, grid location,
    distance before and after, receptive-field box, 95th-percentile activation box) and, with
    --save-images, RUN/prototypes/*.png. A pushed model moves nothing; if the push moves prototypes, the
    weights change: pass --overwrite, or --name NEW for a new run.

    Examples:
      p2p push-prototypes --model teacher
      p2p push-prototypes --model s --name s-pushed
      p2p push-prototypes -m teacher --data-root /moved/CUB --json push.json
    """
    from p2p_cli import api
    from p2p_cli.runtime.distributed import launched_as_main

    summary = api.push(model, workdir=common.workdir, dataset=data.dataset, data_root=data.data_root,
                       save_images=save_images, name=name, overwrite=overwrite, batch_size=data.batch_size,
                       workers=data.workers, device=common.device, precision=data.precision, quiet=common.quiet,
                       verbose=common.verbose)
    if not launched_as_main():  # the other ranks of a torchrun job print nothing
        return
    rep = common.reporter()
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
