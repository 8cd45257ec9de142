"""Run directories and model references.

```
<workdir>/<name>/
  config.yaml  model.safetensors  prototypes.json  metrics.jsonl  checkpoints/  prototypes/
```
A run is never replaced without ``overwrite``; a REF is a run directory, its
``model.safetensors``, or a run name inside the workdir.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.atomic import atomic_write_text


@dataclass(frozen=True)
class RunDir:
    path: Path
    label: str | None = None  # the name to show when the folder's own name says nothing (a Hub snapshot)

    @property
    def name(self) -> str:
        return self.label or self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def model_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def prototypes_path(self) -> Path:
        return self.path / "prototypes.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def snapshot_path(self) -> Path:
        return self.checkpoints / "last.safetensors"

    def is_complete(self) -> bool:
        """A finished run: final weights and config are present."""
        return self.model_path.is_file() and self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise P2PError(f"{self.path} is not a p2p run (no config.yaml)")
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            raise P2PError(f"{self.config_path}: not valid YAML") from None
        if not isinstance(data, dict):
            raise P2PError(f"{self.config_path}: expected a mapping")
        return data

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` atomically (one JSON object per epoch/stage)."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]


def prepare_run(workdir: Path, name: str, *, overwrite: bool, resume: bool) -> RunDir:
    """Create (or reopen for ``resume``) the run directory ``workdir/name``.

    Raises P2PError when the run exists and neither ``overwrite`` nor ``resume`` is given,
    when ``resume`` finds no snapshot, and when ``overwrite`` would delete a directory that
    is not a p2p run.
    """
    if not name or "/" in name or name in (".", ".."):
        raise P2PError(f"invalid run name {name!r}")
    run = RunDir(Path(workdir) / name)
    if resume:
        if not run.snapshot_path.is_file():
            if run.is_complete():
                raise P2PError(f"run '{run.path}' already finished; nothing to resume")
            raise P2PError(f"no snapshot to resume in '{run.path}' (expected {run.snapshot_path})")
        return run
    if run.path.exists():
        if not overwrite:
            raise P2PError(f"run '{run.path}' already exists; pass --overwrite to replace it "
                           "or --resume to continue it")
        if not (run.config_path.exists() or run.checkpoints.exists()) and any(run.path.iterdir()):
            raise P2PError(f"refusing to overwrite '{run.path}': it is not a p2p run directory")
        shutil.rmtree(run.path)
    run.path.mkdir(parents=True)
    return run


def list_runs(workdir: Path) -> list[RunDir]:
    """Finished runs directly inside ``workdir``, sorted by name."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return []
    return sorted((RunDir(p) for p in workdir.iterdir() if p.is_dir() and RunDir(p).is_complete()),
                  key=lambda r: r.name)


def resolve_ref(ref: str | Path, workdir: Path) -> RunDir:
    """A model reference → its run directory.

    ``ref`` is a run directory, its ``model.safetensors``, the name of a run in ``workdir``, or
    ``hf-hub:ORG/NAME[@REV]`` (a run shared on the Hugging Face Hub, fetched into the Hub's cache
    and verified: :func:`p2p_cli.io.hub.resolve_hub_ref`); a one-line P2PError lists the
    workdir's runs when none matches.
    """
    if str(ref).startswith("hf-hub:"):
        from p2p_cli.io.hub import resolve_hub_ref

        return RunDir(resolve_hub_ref(str(ref)), label=str(ref).split("/", 1)[-1].split("@")[0])
    path = Path(ref)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    for candidate in (path, Path(workdir) / str(ref)):
        if candidate.is_dir():
            run = RunDir(candidate)
            if not run.model_path.is_file():
                raise P2PError(f"'{candidate}' is not a finished p2p run (no model.safetensors)")
            return run
    names = [r.name for r in list_runs(workdir)]
    listing = ", ".join(names) if names else "none"
    raise P2PError(f"model '{ref}' not found (not a path, nor a run in {workdir}){did_you_mean(str(ref), names)};"
                   f" runs in {workdir}: {listing}")
