"""Run directories and model references.

```
<workdir>/<name>/
  config.yaml  model.safetensors  prototypes.json  metrics.jsonl  checkpoints/  prototypes/
```
A run is never replaced without ``overwrite``; a REF is a run directory, its
``model.safetensors``, or a run name inside the workdir.

Writing a run (:func:`open_run_dir`) takes the run's exclusive lock (:mod:`p2p_cli.io.runlock`).
``overwrite`` never deletes the old run first: the new one is built beside it, in
``WORKDIR/.NAME.overwrite/NAME``, and swapped into place only when it is finished
(:meth:`RunWriter.commit`); a failed or killed new run leaves the old one byte-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_cli.errors import P2PError, did_you_mean
from p2p_cli.io.atomic import atomic_write_text
from p2p_cli.io.config import parse_yaml_mapping
from p2p_cli.io.runlock import RunLock

MAX_NAME_BYTES = 120
"""The longest run name, in UTF-8 bytes: room under the file system's 255 for the hidden siblings
(``.NAME.overwrite``, ``.NAME.lock``) and the temporary files of atomic writes."""


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
        data = parse_yaml_mapping(self.config_path)
        if data is None:
            raise P2PError(f"{self.config_path}: expected a mapping")
        return data

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` atomically (one JSON object per epoch/stage)."""
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]


def check_run_name(name: str) -> None:
    """A one-line P2PError unless ``name`` can name a run directory inside the workdir: not empty,
    no path separator, not hidden (``.``: p2p's own siblings), no control characters, valid
    UTF-8, at most :data:`MAX_NAME_BYTES` bytes."""
    if not name or not name.strip():
        raise P2PError("the run name must not be empty")
    if "/" in name or "\\" in name or name.startswith("."):
        raise P2PError(f"invalid run name {name!r}: no '/', no '\\', and it may not start with '.'")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise P2PError(f"invalid run name {name!r}: control characters or bytes that are not UTF-8")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise P2PError(f"run name too long: {size} bytes (at most {MAX_NAME_BYTES})")


@dataclass
class RunWriter:
    """A run being written by this process, under its lock.

    ``run`` is where to write now: the run directory itself, or (``overwrite`` of an existing run)
    a staging directory of the same name beside it. :meth:`commit` moves a staged run into place;
    :meth:`abort` deletes it; both release the lock.
    """

    final: RunDir
    run: RunDir
    lock: RunLock | None

    @property
    def staged(self) -> bool:
        return self.run.path != self.final.path

    def commit(self) -> RunDir:
        """Swap a staged run onto the final path (the old run is removed only now); release the lock."""
        try:
            if self.staged:
                _swap_into_place(self.run.path, self.final.path)
        finally:
            self.release()
        return self.final

    def abort(self) -> None:
        """Delete a staged run (the old one stays as it was); release the lock. An unstaged run
        keeps its snapshot for ``--resume``."""
        try:
            if self.staged:
                shutil.rmtree(self.run.path.parent, ignore_errors=True)
        finally:
            self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def staging_path(final: Path) -> Path:
    """Where ``overwrite`` builds the new run: ``WORKDIR/.NAME.overwrite/NAME``."""
    return final.parent / f".{final.name}.overwrite" / final.name


def open_run_dir(workdir: Path, name: str, *, overwrite: bool, resume: bool) -> RunWriter:
    """Lock ``workdir/name`` for writing and say where to write (see :class:`RunWriter`).

    One-line P2PErrors: an invalid name, a run held by another process (its pid), an existing
    run without ``overwrite``/``resume``, ``resume`` without a snapshot, ``overwrite`` of a
    directory that is not a p2p run. Leftovers of a killed writer (a staging directory, an
    interrupted swap, temporary files of atomic writes) are cleaned under the lock.
    """
    check_run_name(name)
    if Path(workdir).exists() and not Path(workdir).is_dir():
        raise P2PError(f"--workdir '{workdir}' is a file, not a folder")
    final = RunDir(Path(workdir) / name)
    lock = RunLock(final.path).acquire()
    try:
        _clean_leftovers(final.path)
        if resume:
            prepare_run(Path(workdir), name, overwrite=False, resume=True)
            return RunWriter(final, final, lock)
        if final.path.exists() and overwrite:
            prepare_run(Path(workdir), name, overwrite=False, resume=False, replace_check_only=True)
            stage = staging_path(final.path)
            stage.mkdir(parents=True)
            return RunWriter(final, RunDir(stage), lock)
        return RunWriter(final, prepare_run(Path(workdir), name, overwrite=overwrite, resume=False), lock)
    except BaseException:
        lock.release()
        raise


def _clean_leftovers(final: Path) -> None:
    """Under the run's lock: undo a swap killed half-way (the old run comes back), drop a stale
    staging directory, and delete temporary files of atomic writes inside the run."""
    old = final.parent / f".{final.name}.old"
    if old.is_dir():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
    stage = staging_path(final).parent
    if stage.exists():
        shutil.rmtree(stage, ignore_errors=True)
    if final.is_dir():
        for tmp in final.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _swap_into_place(new: Path, final: Path) -> None:
    """Replace the directory ``final`` by ``new`` with two renames; then delete the old run and
    the staging folder. A kill between the renames is undone by :func:`_clean_leftovers`."""
    old = final.parent / f".{final.name}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(new.parent, ignore_errors=True)


def prepare_run(workdir: Path, name: str, *, overwrite: bool, resume: bool,
                replace_check_only: bool = False) -> RunDir:
    """Create (or reopen for ``resume``) the run directory ``workdir/name``, without a lock
    (writers of whole runs use :func:`open_run_dir`).

    Raises P2PError when the run exists and neither ``overwrite`` nor ``resume`` is given,
    when ``resume`` finds no snapshot, and when ``overwrite`` would delete a directory that
    is not a p2p run. ``replace_check_only``: only check that the existing directory may be
    replaced (it is kept).
    """
    check_run_name(name)
    run = RunDir(Path(workdir) / name)
    if resume:
        if not run.snapshot_path.is_file():
            if run.is_complete():
                raise P2PError(f"run '{run.path}' already finished; nothing to resume")
            raise P2PError(f"no snapshot to resume in '{run.path}' (expected {run.snapshot_path})")
        return run
    if run.path.exists() and not run.path.is_dir():
        raise P2PError(f"'{run.path}' exists and is not a run directory (a file); choose another --name")
    if run.path.exists():
        if not (overwrite or replace_check_only):
            raise P2PError(f"run '{run.path}' already exists; pass --overwrite to replace it "
                           "or --resume to continue it")
        if not (run.config_path.exists() or run.checkpoints.exists()) and any(run.path.iterdir()):
            raise P2PError(f"refusing to overwrite '{run.path}': it is not a p2p run directory")
        if replace_check_only:
            return run
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
