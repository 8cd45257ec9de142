"""`p2p hub`: publish a finished run on the Hugging Face Hub, or fetch one into the local cache."""

from __future__ import annotations

from typing import Annotated

import typer

from p2p_cli.cli.command import P2PCommand, P2PGroup
from p2p_cli.cli.options import Common, only, with_options

app = typer.Typer(help="Hugging Face Hub: push a run, pull a model (every model REF also accepts "
                       "hf-hub:ORG/NAME(@REV)).", no_args_is_help=True, cls=P2PGroup)


@app.command("push", cls=P2PCommand)
@with_options
def push_cmd(
    run: Annotated[str, typer.Argument(help="the run: a run directory or a run name in the workdir",
                                       show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="Hub repository ORG/NAME (created if needed)", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="create the repository as private")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the files that would be uploaded; "
                                          "write and upload nothing")] = False,
    message: Annotated[str | None, typer.Option("--message", help="commit message")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", help="ORG/NAME of the Hub model this one "
                                                   "derives from (model card's base_model; default: the "
                                                   "teacher's repository when it came from the Hub)")] = None,
    *,
    common: Annotated[Common, only("workdir", "quiet")],
) -> None:
    """Upload a finished run: model.safetensors, config.yaml, prototypes.json, prototype images, metrics,
    the environment record and the model card README.md (written now if p2p owns it). Needs a Hub
    token (hf auth login, or HF_TOKEN).

    Examples:
      p2p hub push teacher me/cub-protopnet-resnet50 --dry-run
      p2p hub push runs/student me/cub-p2p-resnet18 --private
    """
    from p2p_cli import api

    result = api.hub_push(run, repo_id, private=private, dry_run=dry_run, message=message, base_model=base_model,
                          workdir=common.workdir)
    if dry_run:
        for name in result.files:
            typer.echo(name)
        typer.echo(f"dry run: would upload these {len(result.files)} files of {result.run} to {repo_id}"
                   + (" (private)" if private else ""), err=True)
        return
    typer.echo(f"uploaded {len(result.files)} files of {result.run} to {repo_id}: {result.url}")
    typer.echo(f"load it with: p2p predict --model hf-hub:{repo_id} IMAGES")


@app.command("pull", cls=P2PCommand)
@with_options
def pull_cmd(
    ref: Annotated[str, typer.Argument(help="hf-hub:ORG/NAME(@REV)", show_default=False)],
    *,
    common: Annotated[Common, only("quiet")],
) -> None:
    """Download a p2p model into the Hugging Face cache (checked: safetensors only) and print its folder.

    Examples:
      p2p hub pull hf-hub:me/cub-protopnet-resnet50
      p2p hub pull hf-hub:me/cub-protopnet-resnet50@v1
    """
    from p2p_cli import api

    typer.echo(str(api.hub_pull(ref)))
