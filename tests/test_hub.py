"""Hugging Face Hub: ``hf-hub:`` references through the real download path (offline, against a cache
laid out by hand as the Hub's documented cache layout), and ``p2p hub push`` up to the upload call."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import HfApi, constants
from PIL import Image

from p2p_cli.errors import P2PError
from p2p_cli.io import hub
from p2p_cli.io.hub import (
    HubRef,
    hub_files,
    parse_hub_ref,
    push_run,
    resolve_hub_ref,
)
from p2p_cli.io.model_card import MARKER, parse_front_matter
from p2p_cli.models.runs import load_run
from tests.conftest import copy_run, run_cli

SHA = "4f1c2ab0d3e5f60718293a4b5c6d7e8f90a1b2c3"
RUN_FILES = ("model.safetensors", "config.yaml", "prototypes.json", "metrics.jsonl")


@pytest.fixture(scope="module")
def run(shared_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny teacher (a push writes the model card into the run)."""
    return copy_run(shared_teacher, tmp_path_factory.mktemp("hub") / "teacher")


def fake_cache(cache: Path, run: Path, repo: str = "org--tiny", *, symlinks: bool = True,
               extra: dict[str, bytes] | None = None) -> Path:
    """``cache/models--org--tiny/{refs/main, snapshots/<sha>/...}`` as ``snapshot_download`` leaves it:
    the files in ``blobs/`` and relative symlinks to them in the snapshot (or plain copies)."""
    repo_dir = cache / f"models--{repo}"
    snap = repo_dir / "snapshots" / SHA
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(SHA)
    files = {name: (run / name).read_bytes() for name in RUN_FILES} | (extra or {})
    for name, data in files.items():
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(data)
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            target.write_bytes(data)
    return snap


@pytest.fixture()
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache, offline (what HF_HUB_CACHE / HF_HUB_OFFLINE=1 set at start-up)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_parse_hub_ref():
    assert parse_hub_ref("hf-hub:org/tiny") == HubRef("org/tiny", None)
    assert parse_hub_ref("hf-hub:org/tiny@v1.0") == HubRef("org/tiny", "v1.0")
    assert str(parse_hub_ref(f"hf-hub:my-org/m.v2@{SHA}")) == f"hf-hub:my-org/m.v2@{SHA}"
    for bad in ("hf-hub:tiny", "hf-hub:org/tiny@", "hf-hub:org/../x", "hf-hub:a/b/c", "org/tiny"):
        with pytest.raises(P2PError) as exc:
            parse_hub_ref(bad)
        assert "\n" not in str(exc.value)


def test_cached_model_loads_offline(run, offline_cache):
    snap = fake_cache(offline_cache, run)
    assert resolve_hub_ref("hf-hub:org/tiny") == snap
    assert resolve_hub_ref("hf-hub:org/tiny@main") == snap
    assert resolve_hub_ref(f"hf-hub:org/tiny@{SHA}") == snap
    hub_model = load_run("hf-hub:org/tiny", Path("unused"))
    local = load_run(run)
    assert hub_model.weights == local.weights and hub_model.classes == local.classes
    for key, value in local.model.state_dict().items():
        assert torch.equal(hub_model.model.state_dict()[key], value), key


def test_evaluate_loads_a_cached_hub_model_by_reference(run, offline_cache, tmp_path, capsys):
    fake_cache(offline_cache, run)
    out = tmp_path / "eval.json"
    code, _, err = run_cli(["evaluate", "--model", "hf-hub:org/tiny", "--workdir", str(tmp_path / "empty"),
                            "--device", "cpu", "--json", str(out), "-q"], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["teacher"] == "tiny" and report["models"]["tiny"]["weights_hash"] == load_run(run).weights


def test_uncached_model_offline_is_one_line_naming_the_repo(offline_cache):
    with pytest.raises(P2PError) as exc:
        resolve_hub_ref("hf-hub:org/missing")
    text = str(exc.value)
    assert "hf-hub:org/missing" in text and "HF_HUB_OFFLINE" in text and "\n" not in text


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "model.pth", "extra/state.pkl", "last.ckpt"])
def test_pickle_files_are_refused(run, offline_cache, name):
    fake_cache(offline_cache, run, extra={name: b"\x80\x04pickle"})
    with pytest.raises(P2PError, match=f"holds {name}: p2p loads safetensors only"):
        resolve_hub_ref("hf-hub:org/tiny")


def test_not_a_p2p_repo_is_refused(run, offline_cache, tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    fake_cache(offline_cache, run, extra={"model.safetensors": foreign.read_bytes()})
    with pytest.raises(P2PError, match="model.safetensors is not a p2p model"):
        resolve_hub_ref("hf-hub:org/tiny")


def test_online_listing_refuses_before_downloading(monkeypatch):
    """Online, the repository's file list is checked first: a pickle there means nothing is downloaded."""
    monkeypatch.setattr(hub, "_offline", lambda: False)
    files = ["model.safetensors", "config.yaml", "pytorch_model.bin"]
    info = SimpleNamespace(sha=SHA, siblings=[SimpleNamespace(rfilename=f) for f in files])
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: info)

    def no_download(*args, **kwargs):
        raise AssertionError("snapshot_download must not run")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_download)
    with pytest.raises(P2PError, match="hf-hub:org/evil holds pytorch_model.bin"):
        resolve_hub_ref("hf-hub:org/evil")


def test_unreachable_hub_falls_back_to_the_cache(run, offline_cache, monkeypatch):
    """Online mode but no connection: the cached snapshot loads, once, without a second download attempt."""
    monkeypatch.setattr(hub, "_offline", lambda: False)

    def unreachable(self, repo_id, **kw):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    calls = []
    import huggingface_hub

    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    snap = fake_cache(offline_cache, run)
    assert resolve_hub_ref("hf-hub:org/tiny") == snap
    assert calls[0]["local_files_only"] is True and calls[0]["allow_patterns"] == hub.DOWNLOAD_PATTERNS
    with pytest.raises(P2PError, match="hf-hub:org/other: cannot reach the Hugging Face Hub and it is not in"):
        resolve_hub_ref("hf-hub:org/other")


def test_environment_variables_are_honoured_in_a_fresh_process(run, tmp_path):
    """The real start-up path: HF_HUB_CACHE and HF_HUB_OFFLINE=1 are read when huggingface_hub is
    imported (a fresh interpreter; resolving a reference imports no torch, so this is quick)."""
    cache = tmp_path / "env-cache"
    snap = fake_cache(cache, run, symlinks=False)
    script = ("import sys\n"
              "from p2p_cli.errors import P2PError\n"
              "from p2p_cli.io.hub import resolve_hub_ref\n"
              "print(resolve_hub_ref('hf-hub:org/tiny'))\n"
              "try:\n    resolve_hub_ref('hf-hub:org/nothere')\n"
              "except P2PError as exc:\n    print(exc)\n"
              "print('torch' in sys.modules)\n")
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    found, error, torch_loaded = done.stdout.splitlines()
    assert Path(found) == snap
    assert error.startswith("hf-hub:org/nothere is not in the local Hugging Face cache and HF_HUB_OFFLINE=1")
    assert torch_loaded == "False"


def test_cli_with_a_hub_ref(run, offline_cache, tmp_path, capsys):
    fake_cache(offline_cache, run)
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    code, out, err = run_cli(["predict", "--model", "hf-hub:org/tiny", str(image), "--json", "-", "-q",
                              "--device", "cpu"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == "hf-hub:org/tiny" and len(doc["predictions"]) == 1
    code, _, err = run_cli(["hub", "pull", "hf-hub:org/nothere"], capsys)
    assert code == 2 and err.startswith("Error: hf-hub:org/nothere is not in the local Hugging Face cache")
    assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- push


@pytest.fixture()
def run_copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / "teacher"
    shutil.copytree(run, dst)
    (dst / "prototypes").mkdir()
    (dst / "prototypes" / "prototype-000-patch.png").write_bytes(b"png")
    (dst / "checkpoints").mkdir(exist_ok=True)
    (dst / "checkpoints" / "last.safetensors").write_bytes(b"snapshot")
    (dst / "notes.pkl").write_bytes(b"\x80\x04")
    (dst / ".model.safetensors.abc.tmp").write_bytes(b"tmp")
    (dst / "tensorboard").mkdir()
    (dst / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"tb")
    return dst


def test_hub_files_are_the_run_records_only(run_copy):
    assert hub_files(run_copy) == ["README.md", "config.yaml", "environment.json", "metrics.csv", "metrics.jsonl",
                                   "model.safetensors", "prototypes.json",
                                   "prototypes/prototype-000-patch.png", "tensorboard/events.out.tfevents.1.host"]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def create_repo(api, repo_id, **kwargs):
            self.calls.append(("create_repo", (repo_id,), kwargs))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(api, **kwargs):
            self.calls.append(("upload_folder", (), kwargs))
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/1"})()

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_uploads_the_run_with_its_model_card(run_copy, monkeypatch):
    rec = Recorder()
    rec.install(monkeypatch)
    result = push_run(run_copy, "me/tiny-protopnet", private=True)
    (create, args, kwargs), (upload, _, up) = rec.calls
    assert create == "create_repo" and args == ("me/tiny-protopnet",)
    assert kwargs == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert upload == "upload_folder"
    assert up["repo_id"] == "me/tiny-protopnet" and up["folder_path"] == str(run_copy) and up["repo_type"] == "model"
    expected = ["README.md", "config.yaml", "environment.json", "metrics.csv", "metrics.jsonl", "model.safetensors",
                "prototypes.json", "prototypes/prototype-000-patch.png", "tensorboard/events.out.tfevents.1.host"]
    assert up["allow_patterns"] == expected and result.files == expected
    card = (run_copy / "README.md").read_text()
    assert "p2p predict --model hf-hub:me/tiny-protopnet" in card and MARKER in card
    assert parse_front_matter(card)["library_name"] == "p2p"
    assert result.url.endswith("/commit/1")


def test_push_keeps_an_edited_card(run_copy, monkeypatch):
    Recorder().install(monkeypatch)
    (run_copy / "README.md").write_text("---\nlibrary_name: p2p\n---\n# my own words\n")
    push_run(run_copy, "me/tiny")
    assert (run_copy / "README.md").read_text() == "---\nlibrary_name: p2p\n---\n# my own words\n"


def test_dry_run_lists_exactly_the_files_and_touches_nothing(run_copy, monkeypatch, capsys):
    rec = Recorder()
    rec.install(monkeypatch)
    (run_copy / "README.md").unlink()  # a run finished before model cards existed: push writes one
    code, out, err = run_cli(["hub", "push", "teacher", "me/tiny", "--dry-run", "--workdir",
                              str(run_copy.parent)], capsys)
    assert code == 0, err
    assert out.splitlines() == ["README.md", *hub_files(run_copy)]
    assert "would upload these 9 files" in err
    assert rec.calls == [] and not (run_copy / "README.md").exists()
    code, out, err = run_cli(["hub", "push", "teacher", "me/tiny", "--private", "--workdir", str(run_copy.parent)],
                             capsys)
    assert code == 0, err
    assert [c[0] for c in rec.calls] == ["create_repo", "upload_folder"] and rec.calls[0][2]["private"] is True
    assert rec.calls[1][2]["allow_patterns"] == hub_files(run_copy)  # README.md now exists, so it is listed
    assert f"uploaded 9 files of {run_copy} to me/tiny" in out and "p2p predict --model hf-hub:me/tiny" in out


def test_push_refuses_bad_input(run_copy, tmp_path):
    with pytest.raises(P2PError, match="not a Hub repository id"):
        push_run(run_copy, "no-slash")
    (tmp_path / "empty").mkdir()
    with pytest.raises(P2PError, match="not a finished p2p run"):
        push_run(tmp_path / "empty", "me/x", dry_run=True)
