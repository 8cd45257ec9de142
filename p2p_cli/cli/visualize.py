"""`p2p visualize`: explanation figures (top-k prototypes per model) and the matched gallery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from p2p_cli.cli.command import variadic_command
from p2p_cli.cli.options import Common, ModelsOpt, with_options

VisualizeCommand = variadic_command("--model", "-m", "--image", "-i")  # --model a b c, --image a.jpg b.jpg


@with_options
def visualize_cmd(
    image: Annotated[list[str] | None, typer.Option("--image", "-i", help="image(s) to explain: JPEG/PNG files of "
                                                    "any size, folders of them, or quoted glob patterns; several "
                                                    "may follow one flag", metavar="PATH")] = None,
    model: ModelsOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="prototypes shown per model")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output directory (default: "
                                             "WORKDIR/visualizations/IMAGE-STEM)")] = None,
    class_name: Annotated[str | None, typer.Option("--class", help="explain this class instead of the "
                                                   "predicted one")] = None,
    prototypes: Annotated[bool, typer.Option("--prototypes", help="also draw the teacher-vs-student gallery of "
                                             "Hungarian-matched prototypes (PMS, Proto2Proto Fig. 4)")] = False,
    gallery_rows: Annotated[int, typer.Option("--gallery-rows", min=1, help="teacher prototypes in the gallery "
                                              "(of the explained class)")] = 10,
    show_parts: Annotated[bool, typer.Option("--show-parts", help="draw the dataset's ground-truth part boxes "
                                             "(dataset images only)")] = False,
    precision: Annotated[str | None, typer.Option("--precision", help="autocast precision of the backbones "
                                                  "(default: each model's own, as in evaluate)",
                                                  metavar="auto|bf16|fp16|fp32")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the numbers as JSON (several images: "
                                                   "one file each, named after the image); - writes only the "
                                                   "JSON to stdout")] = None,
    *,
    common: Common,
) -> None:
    """Explain images with the teacher and its students, side by side (Proto2Proto Fig. 1).

    Per model: the prediction, then the top-k prototypes by contribution to the class (similarity ×
    last-layer weight, ProtoPNet's local explanation), each with its heat map and 95th-percentile box on
    the image and its source patch. --model defaults to the workdir's teacher and the students distilled
    from it (the teacher with the most students). Each model runs at the precision it was trained with,
    so its similarities are those of evaluate. Per image writes OUT/explanation.png, OUT/gallery.png
    (with --prototypes) and a self-contained OUT/index.html.

    Examples:
      p2p visualize --image bird.jpg
      p2p visualize --image photos/ --model resnet50 resnet18-proto2proto --top-k 3
      p2p visualize --image 'photos/*.jpg' --prototypes --out figs/
    """
    from p2p_cli import api
    from p2p_cli.cli.common import to_stdout, write_json_report

    stdout = to_stdout(json_path)
    results = api.explain(image or None, models=model or [], top_k=top_k, out=out, class_name=class_name,
                          prototypes=prototypes, gallery_rows=gallery_rows, show_parts=show_parts,
                          precision=precision, json_path=None if stdout else json_path, workdir=common.workdir,
                          device=common.device, quiet=common.quiet, verbose=common.verbose)
    results = results if isinstance(results, list) else [results]
    if stdout:
        summaries = [r.summary for r in results]
        write_json_report(json_path, summaries[0] if len(summaries) == 1 else {"images": summaries}, common.quiet)
    rep = common.reporter()
    for result in results:
        for line in result.lines:
            rep.info(line)
        for kind, path in result.files.items():
            if stdout:
                rep.info(f"{kind}: {path}")
            else:
                typer.echo(f"{kind}: {path}")
