"""`p2p data prepare`: CUB-200-2011 or Stanford Cars as a split (optionally cropped) image folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.options import Common, only, with_options


@with_options
def prepare_cmd(
    kind: Annotated[str, typer.Argument(help="the dataset layout: cub or cars", show_default=False)],
    root: Annotated[Path, typer.Argument(help="the dataset as downloaded (CUB_200_2011/, or the Cars folder with "
                                         "cars_train/, cars_test/ and the devkit)", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write: OUT/train/<class>/*.jpg, "
                                      "OUT/test/<class>/*.jpg")],
    crop: Annotated[bool, typer.Option("--crop", help="crop every image to its bounding box")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a non-empty OUT")] = False,
    *,
    common: Annotated[Common, only("verbose", "quiet")],
) -> None:
    """Split a dataset by its official train/test split (and crop to the bounding boxes with --crop), as
    ProtoPNet's users do before training; the result trains with --dataset folder --data-root OUT.

    Examples:
      p2p data prepare cub ~/data/CUB_200_2011 --out ~/data/cub-cropped --crop
      p2p data prepare cars ~/data/stanford_cars --out ~/data/cars
    """
    from p2p_cli import api
    from p2p_cli.data.prepare import prepare_summary

    result = api.prepare_data(kind, root, out, crop=crop, overwrite=overwrite, quiet=common.quiet,
                              verbose=common.verbose)
    typer.echo(prepare_summary(result))
