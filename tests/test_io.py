from __future__ import annotations

import os
import pickle

import pytest
import torch

from p2p_cli.errors import P2PError
from p2p_cli.io.atomic import atomic_write_text
from p2p_cli.io.checkpoint import (
    flatten_optimizer,
    load_tensors,
    read_metadata,
    save_tensors,
    unflatten_optimizer,
    weights_hash,
)
from p2p_cli.io.rundir import RunDir, list_runs, prepare_run, resolve_ref


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_gives_a_normal_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")  # like open(): 0666 minus the umask, not mkstemp's 0600
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "new.txt").chmod(0o640)
        atomic_write_text(tmp_path / "new.txt", "y")  # a replaced file keeps its mode
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    from p2p_cli.io.atomic import atomic_write

    atomic_write_text(tmp_path / "a.txt", "old")

    def boom(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.txt", boom)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_tensors_and_metadata_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_tensors(tmp_path / "x.safetensors", tensors, {"arch": "protopnet", "cfg": {"k": [1, 2]}})
    back, meta = load_tensors(tmp_path / "x.safetensors")
    assert torch.equal(back["a"], tensors["a"]) and torch.equal(back["b"], tensors["b"])
    assert meta["arch"] == "protopnet"
    assert read_metadata(tmp_path / "x.safetensors")["cfg"] == {"k": [1, 2]}
    assert weights_hash(back) == weights_hash(tensors)
    assert weights_hash({"a": tensors["a"] + 1, "b": tensors["b"]}) != weights_hash(tensors)


def test_weights_hash_golden_value():
    # The hash is stored in students' runs and in cache keys: its definition must not drift.
    # sha256 over, per tensor in name order: name, dtype, shape, then the raw little-endian bytes.
    import hashlib

    tensors = {"w": torch.tensor([1, 2], dtype=torch.int32), "e": torch.zeros(0),
               "b": torch.tensor([1.0], dtype=torch.bfloat16)}
    ref = hashlib.sha256()
    for part in (b"b", b"torch.bfloat16", b"(1,)", b"\x80\x3f", b"e", b"torch.float32", b"(0,)",
                 b"w", b"torch.int32", b"(2,)", b"\x01\x00\x00\x00\x02\x00\x00\x00"):
        ref.update(part)
    assert weights_hash(tensors) == ref.hexdigest()[:16]
    # a non-contiguous view hashes as its values
    t = torch.arange(6, dtype=torch.int32).view(2, 3)
    assert weights_hash({"x": t.t()}) == weights_hash({"x": t.t().contiguous()})


def test_pickles_and_truncated_files_are_refused(tmp_path):
    pkl = tmp_path / "model.safetensors"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(P2PError, match="pickle"):
        load_tensors(pkl)
    good = tmp_path / "good.safetensors"
    save_tensors(good, {"a": torch.zeros(100)}, {})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(P2PError, match="truncated or corrupt"):
        load_tensors(cut)


def test_optimizer_state_round_trip():
    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 2))]
    opt = torch.optim.Adam([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.01}])
    (params[0].sum() + params[1].pow(2).sum()).backward()
    opt.step()
    tensors, meta = flatten_optimizer("joint", opt.state_dict())
    restored = unflatten_optimizer("joint", tensors, meta)
    opt2 = torch.optim.Adam([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.01}])
    opt2.load_state_dict(restored)
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_are_never_overwritten_silently(tmp_path):
    run = prepare_run(tmp_path, "t", overwrite=False, resume=False)
    run.config_path.write_text("a: 1\n")
    with pytest.raises(P2PError, match="already exists; pass --overwrite"):
        prepare_run(tmp_path, "t", overwrite=False, resume=False)
    run = prepare_run(tmp_path, "t", overwrite=True, resume=False)
    assert not run.config_path.exists()
    with pytest.raises(P2PError, match="no snapshot to resume"):
        prepare_run(tmp_path, "t", overwrite=False, resume=True)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(P2PError, match="not a p2p run directory"):
        prepare_run(tmp_path, "photos", overwrite=True, resume=False)
    assert (other / "holiday.jpg").exists()


def test_resolve_ref_by_name_path_and_file(tmp_path):
    run = RunDir(tmp_path / "teacher")
    run.path.mkdir()
    run.config_path.write_text("a: 1\n")
    save_tensors(run.model_path, {"a": torch.zeros(1)}, {})
    assert resolve_ref("teacher", tmp_path).path == run.path
    assert resolve_ref(str(run.path), tmp_path / "elsewhere").path == run.path
    assert resolve_ref(str(run.model_path), tmp_path / "elsewhere").path == run.path
    assert [r.name for r in list_runs(tmp_path)] == ["teacher"]
    with pytest.raises(P2PError) as err:
        resolve_ref("teachr", tmp_path)
    assert "did you mean 'teacher'" in str(err.value) and "runs in" in str(err.value)
