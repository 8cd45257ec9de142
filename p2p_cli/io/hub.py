"""Hugging Face Hub, both ways: ``hf-hub:ORG/NAME[@REV]`` model references and ``p2p hub push``.

A p2p model repository is a run directory: ``model.safetensors``, ``config.yaml``,
``prototypes.json``, the model card ``README.md``, the training records (``metrics.jsonl``,
``metrics.csv``, ``environment.json``, ``evaluation.json``) and images (``prototypes/*.png``,
``figures/*``), optionally TensorBoard events. Nothing else is uploaded, and nothing else is
downloaded.

Loading is safetensors-only: a repository that holds any pickle-capable file (``.bin``,
``.pt``, ``.pth``, ``.pkl``, ``.ckpt`` …) is refused before anything is downloaded (from the
Hub's file list) and again after (the local snapshot is checked file by file), so a cached
snapshot built by other means is held to the same rule. Downloads go to the standard cache
(``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``) through ``snapshot_download``;
with ``HF_HUB_OFFLINE=1`` a cached model loads and an uncached one is a one-line error naming
the repository. ``huggingface_hub`` is imported only when a Hub reference is used.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2p_cli.errors import P2PError
from p2p_cli.io.model_card import README, is_generated, safetensors_metadata, write_model_card
from p2p_cli.io.rundir import resolve_ref

HUB_PREFIX = "hf-hub:"
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5")
"""Files p2p never loads: pickles (or formats that may embed them) and foreign checkpoints."""
RUN_FILES = ("model.safetensors", "config.yaml", "prototypes.json", README, "metrics.jsonl", "metrics.csv",
             "environment.json", "evaluation.json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
RUN_FOLDERS: dict[str, tuple[str, ...]] = {"prototypes": IMAGE_SUFFIXES, "figures": IMAGE_SUFFIXES + (".html",)}
DOWNLOAD_PATTERNS = [*RUN_FILES, *(f"{d}/*{s}" for d, suffixes in RUN_FOLDERS.items() for s in suffixes)]
"""What ``snapshot_download`` fetches (``fnmatch`` patterns); TensorBoard events stay on the Hub."""
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf-hub:ORG/NAME[@REV]`` reference (``revision`` None = the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_ref(ref: Any) -> bool:
    """True for a string starting with ``hf-hub:``."""
    return isinstance(ref, str) and ref.startswith(HUB_PREFIX)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is ``ORG/NAME`` as the Hub spells repositories, else a one-line error."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise P2PError(f"'{repo_id}' is not a Hub repository id (expected ORG/NAME: letters, digits, '-', '_', '.')")
    return repo_id


def parse_hub_ref(ref: str) -> HubRef:
    """``hf-hub:ORG/NAME`` or ``hf-hub:ORG/NAME@REV`` (a branch, tag or commit) → :class:`HubRef`."""
    if not is_hub_ref(ref):
        raise P2PError(f"'{ref}' is not a Hub reference (expected hf-hub:ORG/NAME[@REV])")
    body = ref[len(HUB_PREFIX):]
    repo_id, _, revision = body.partition("@")
    if "@" in body and not revision:
        raise P2PError(f"'{ref}': empty revision after '@' (expected hf-hub:ORG/NAME@REV)")
    return HubRef(check_repo_id(repo_id), revision or None)


def forbidden_files(names: list[str]) -> list[str]:
    """The names among ``names`` that p2p refuses to load (see :data:`FORBIDDEN_SUFFIXES`)."""
    return sorted(n for n in names if n.lower().endswith(FORBIDDEN_SUFFIXES))


def _refuse(ref: HubRef | str, bad: list[str]) -> P2PError:
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return P2PError(f"{ref} holds {bad[0]}{more}: p2p loads safetensors only and refuses pickle-based files "
                    f"({', '.join(FORBIDDEN_SUFFIXES[:5])} …)")


def _offline() -> bool:
    import huggingface_hub
    from huggingface_hub import constants

    probe = getattr(huggingface_hub, "is_offline_mode", None)
    return bool(probe()) if callable(probe) else bool(constants.HF_HUB_OFFLINE)


def _remote_files(ref: HubRef) -> list[str] | None:
    """The repository's file list from the Hub, or None when the Hub cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(ref.repo_id, revision=ref.revision, files_metadata=False)
    except GatedRepoError:
        raise P2PError(f"{ref}: a gated repository; accept its conditions on the Hub and log in (hf auth login)"
                       ) from None
    except RepositoryNotFoundError:
        raise P2PError(f"{ref}: repository not found on the Hugging Face Hub (a private one needs a token: "
                       "hf auth login, or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise P2PError(f"{ref}: revision '{ref.revision}' not found on the Hugging Face Hub") from None
    except Exception:  # noqa: BLE001 - unreachable (offline mode, connection, server errors: their types differ
        return None  # across huggingface_hub versions): fall back to the cache, which is checked below
    return [s.rfilename for s in info.siblings or []]


def verify_snapshot(folder: str | Path, ref: HubRef | str = "") -> Path:
    """Check that ``folder`` (a downloaded snapshot) is a p2p run: no pickle-capable file, a
    ``model.safetensors`` whose header says it is a p2p model, and a ``config.yaml``."""
    folder = Path(folder)
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
    label = str(ref) or str(folder)
    bad = forbidden_files(names)
    if bad:
        raise _refuse(label, bad)
    model = folder / "model.safetensors"
    if not model.is_file():
        raise P2PError(f"{label}: not a p2p model repository (no model.safetensors)")
    if safetensors_metadata(model).get("format") != "p2p-model":
        raise P2PError(f"{label}: model.safetensors is not a p2p model (no p2p metadata)")
    if not (folder / "config.yaml").is_file():
        raise P2PError(f"{label}: not a p2p run (no config.yaml)")
    return folder


def resolve_hub_ref(ref: str, *, cache_dir: str | Path | None = None) -> Path:
    """Download (or find in the cache) the p2p run behind ``hf-hub:ORG/NAME[@REV]`` and return the
    path of its verified local snapshot, a run directory. One-line P2PError when the repository
    does not exist, holds pickle-capable files, is not a p2p run, or is neither reachable nor cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    hub = parse_hub_ref(ref)
    offline = _offline()
    remote = None if offline else _remote_files(hub)
    if remote is not None:
        bad = forbidden_files(remote)
        if bad:
            raise _refuse(hub, bad)
        if "model.safetensors" not in remote:
            raise P2PError(f"{hub}: not a p2p model repository (no model.safetensors)")
    try:  # unreachable Hub: the cache only (no second round of connection retries)
        folder = snapshot_download(hub.repo_id, revision=hub.revision, repo_type="model",
                                   allow_patterns=DOWNLOAD_PATTERNS, cache_dir=str(cache_dir) if cache_dir else None,
                                   local_files_only=remote is None)
    except LocalEntryNotFoundError:
        if offline:
            raise P2PError(f"{hub} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading "
                           "it (run once online, or unset HF_HUB_OFFLINE)") from None
        raise P2PError(f"{hub}: cannot reach the Hugging Face Hub and it is not in the local cache") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise P2PError(f"{hub}: download failed ({reason})") from None
    return verify_snapshot(folder, hub)


# ----------------------------------------------------------------------------- push


def hub_files(run_dir: str | Path) -> list[str]:
    """The files of ``run_dir`` that ``p2p hub push`` uploads, relative POSIX paths, sorted: the
    :data:`RUN_FILES` present, images under ``prototypes/`` and ``figures/``, and TensorBoard
    event files under ``tensorboard/``. Checkpoints, hidden and temporary files, and every
    pickle-capable file stay local."""
    run = Path(run_dir)
    out = [name for name in RUN_FILES if (run / name).is_file()]
    for folder, suffixes in RUN_FOLDERS.items():
        if (run / folder).is_dir():
            out += [p.relative_to(run).as_posix() for p in (run / folder).rglob("*")
                    if p.is_file() and p.suffix.lower() in suffixes and not _hidden(p.relative_to(run))]
    if (run / "tensorboard").is_dir():
        out += [p.relative_to(run).as_posix() for p in (run / "tensorboard").rglob("events.out.tfevents.*")
                if p.is_file() and not _hidden(p.relative_to(run))]
    return sorted(set(out) - set(forbidden_files(out)))


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


@dataclass
class PushResult:
    repo_id: str
    files: list[str]
    dry_run: bool
    url: str | None = None
    card_written: bool = False
    run: Path | None = None


def push_run(run_dir: str | Path, repo_id: str, *, workdir: str | Path | None = None, private: bool = False,
             dry_run: bool = False, commit_message: str | None = None, token: str | None = None,
             base_model: str | None = None) -> PushResult:
    """Upload a finished run to the Hub repository ``repo_id`` (created if needed, ``private`` if asked).
    With ``workdir``, ``run_dir`` is a model reference (a run directory or a run name in ``workdir``).

    The model card ``README.md`` is (re)written first, naming ``repo_id`` in its usage lines, unless
    someone edited it (removed the p2p marker line); ``base_model`` (ORG/NAME) goes into its front
    matter. ``dry_run`` writes and uploads nothing and returns exactly the files that would be uploaded.
    """
    run = resolve_ref(run_dir, Path(workdir)).path if workdir is not None else Path(run_dir)
    check_repo_id(repo_id)
    if base_model is not None:
        check_repo_id(base_model)
    if not (run / "model.safetensors").is_file() or not (run / "config.yaml").is_file():
        raise P2PError(f"'{run}' is not a finished p2p run (needs model.safetensors and config.yaml)")
    card = is_generated(run / README)
    if dry_run:
        files = sorted(set(hub_files(run)) | ({README} if card else set()))
        return PushResult(repo_id, files, dry_run=True, run=run)
    if card:
        write_model_card(run, repo_id=repo_id, base_model=base_model)
    files = hub_files(run)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(run), repo_type="model",
                                 allow_patterns=[glob.escape(f) for f in files],
                                 commit_message=commit_message or f"Upload p2p run {run.name}")
    except LocalTokenNotFoundError:
        raise P2PError("pushing to the Hub needs a token: run `hf auth login` or set HF_TOKEN") from None
    except (HfHubHTTPError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise P2PError(f"push to {repo_id} failed ({reason})") from None
    url = getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}"
    return PushResult(repo_id, files, dry_run=False, url=str(url), card_written=card, run=run)
