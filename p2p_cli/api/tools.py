"""The tool commands as functions: ``p2p models``, ``p2p data …`` and ``p2p hub …``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2p_cli.api._common import PathLike, reporter

if TYPE_CHECKING:
    from p2p_cli.data.check import CheckRow
    from p2p_cli.data.prepare import PrepareResult
    from p2p_cli.io.hub import PushResult as HubPushResult
    from p2p_cli.models.registry import BackboneSpec


@dataclass(frozen=True)
class ModelsListing:
    backbones: list[BackboneSpec]
    timm_models: list[str] | None  # None: no timm pattern given
    runs: list[tuple[str, dict[str, Any]]]  # (run name, model.safetensors metadata), sorted by name


def list_models(*, workdir: PathLike = "runs", timm: str | None = None) -> ModelsListing:
    """The registered backbones, the timm models matching the pattern ``timm``, and the finished
    runs in ``workdir`` with their metadata. Example::

        from p2p_cli.api import list_models
        print([name for name, meta in list_models(workdir="runs").runs])
    """
    from p2p_cli.io.checkpoint import read_metadata
    from p2p_cli.io.rundir import list_runs
    from p2p_cli.models.registry import list_backbones

    timm_models = None
    if timm:
        import timm as timm_lib

        timm_models = list(timm_lib.list_models(timm))
    runs = [(run.name, read_metadata(run.model_path)) for run in list_runs(Path(workdir))]
    return ModelsListing(list_backbones(), timm_models, runs)


def synthesize(out: PathLike, *, preset: str = "easy", classes: int = 10, train_per_class: int = 100,
               test_per_class: int = 40, image_size: int = 112, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the built-in synthetic dataset (CUB layout, with parts and boxes) to ``out``. Example::

        from p2p_cli.api import synthesize
        synthesize("data/synthetic", classes=3, train_per_class=6, test_per_class=3)
    """
    from p2p_cli.data.synthetic import synthesize as write

    return write(out, preset=preset, num_classes=classes, train_per_class=train_per_class,
                 test_per_class=test_per_class, image_size=image_size, seed=seed, overwrite=overwrite)


def check_data(dataset: str, data_root: PathLike | None = None) -> list[CheckRow]:
    """Check a dataset root (layout, unreadable images, empty classes, duplicates); one row per check
    with ``status`` ok/warn/error. Example::

        from p2p_cli.api import check_data
        assert all(row.status != "error" for row in check_data("synthetic"))
    """
    from p2p_cli.data.check import check_dataset

    return check_dataset(dataset, data_root)


def prepare_data(kind: str, root: PathLike, out: PathLike, *, crop: bool = False, overwrite: bool = False,
                 quiet: bool = True, verbose: bool = False) -> PrepareResult:
    """Split CUB-200-2011 or Stanford Cars (``kind``) into ``out/train/<class>`` and ``out/test/<class>``
    (cropped to the bounding boxes with ``crop``), for ``dataset="folder"``. Example::

        from p2p_cli.api import prepare_data
        prepare_data("cub", "~/data/CUB_200_2011", "~/data/cub-cropped", crop=True)
    """
    from p2p_cli.data.prepare import prepare_dataset

    with reporter(quiet, verbose).task(f"prepare {kind}", None) as advance:
        return prepare_dataset(kind, root, out, crop=crop, overwrite=overwrite, progress=advance)


def hub_push(run: str, repo_id: str, *, private: bool = False, dry_run: bool = False, message: str | None = None,
             base_model: str | None = None, workdir: PathLike = "runs") -> HubPushResult:
    """Upload a finished run (weights, config, prototypes, records, model card) to the Hugging Face
    Hub repository ``repo_id``; ``dry_run`` lists the files only. Example::

        from p2p_cli.api import hub_push
        print(hub_push("t", "me/tiny-protopnet", dry_run=True).files)
    """
    from p2p_cli.io.hub import push_run

    return push_run(run, repo_id, workdir=Path(workdir), private=private, dry_run=dry_run, commit_message=message,
                    base_model=base_model)


def hub_pull(ref: str) -> Path:
    """Download ``hf-hub:ORG/NAME(@REV)`` (``ORG/NAME`` too) into the Hugging Face cache, checked
    (safetensors only); returns its folder, a run directory for :func:`load_run`. Example::

        from p2p_cli.api import hub_pull, load_run
        run = load_run(hub_pull("hf-hub:me/tiny-protopnet"))
    """
    from p2p_cli.io.hub import resolve_hub_ref

    return resolve_hub_ref(ref if ref.startswith("hf-hub:") else f"hf-hub:{ref}")
