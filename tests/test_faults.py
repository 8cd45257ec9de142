"""Faults with real processes, signals and file systems: the run lock, two writers racing for one
run, ``--overwrite`` killed or failing, ``--resume`` with another config, a full disk (a small
tmpfs) and a read-only workdir. Namespaced mounts are used where the machine allows them (as
root, ``chmod`` does not stop writes); a test skips cleanly where it does not."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2p_cli.errors import P2PError, os_error_message
from p2p_cli.io.runlock import RunLock
from tests.conftest import run_cli, teacher_workdir

pytestmark = pytest.mark.slow
NAN_LRS = ["--lr-backbone", "1e30", "--lr-add-on", "1e30", "--lr-prototypes", "1e30"]  # NaN in the first batches


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def p2p(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "p2p_cli", *args], capture_output=True, text=True,
                          timeout=300)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"ended before {path} appeared: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


@pytest.fixture()
def workdir(shared_teacher: Path, tmp_path: Path) -> Path:
    return teacher_workdir(shared_teacher, tmp_path / "w", "t")


def train_args(workdir: Path, *extra: str) -> list[str]:
    return ["train-teacher", "--config", str(workdir / "tiny.yaml"), "--workdir", str(workdir), "--name", "t",
            "--device", "cpu", "-q", *extra]


# -- the lock -------------------------------------------------------------------------------------

def test_lock_names_a_live_holder_and_frees_after_sigkill(tmp_path):
    run = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from p2p_cli.io.runlock import RunLock; RunLock(Path(sys.argv[1])).acquire(); "
                               "print('held', flush=True); time.sleep(120)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(P2PError, match=rf"being written by another p2p process \(pid {holder.pid}\)"):
            RunLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".r.lock").read_text().strip() == str(holder.pid)  # left behind by the dead holder
    with RunLock(run) as lock:  # stale: the kernel dropped the dead process's flock
        assert lock.held and (tmp_path / ".r.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".r.lock").exists()


def test_two_writers_of_one_run_exactly_one_proceeds(workdir):
    args = [sys.executable, "-m", "p2p_cli", *train_args(workdir, "--overwrite")]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(r[3] for r in results)
    assert codes == [0, 2], results
    (winner, *_), (_, _, err, _) = sorted(results, key=lambda r: r[3])
    assert error_lines(err) == [f"Error: run '{workdir / 't'}' is being written by another p2p process "
                                f"(pid {winner}); wait for it to finish or choose another --name"]
    assert sorted(p.name for p in workdir.iterdir()) == ["t", "tiny.yaml"]  # no staging, no lock left


# -- --overwrite ----------------------------------------------------------------------------------

def test_overwrite_killed_then_failing_leaves_the_old_run_byte_identical(workdir, capsys):
    old = digest(workdir / "t")
    proc = subprocess.Popen([sys.executable, "-m", "p2p_cli", *train_args(workdir, "--overwrite")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(workdir / ".t.overwrite" / "t" / "checkpoints" / "last.safetensors", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert digest(workdir / "t") == old
    assert (workdir / ".t.lock").exists() and (workdir / ".t.overwrite").exists()  # a killed writer's leftovers
    code, _, err = run_cli(train_args(workdir, "--overwrite", *NAN_LRS), capsys)  # takes the stale lock, cleans
    assert code == 2 and len(error_lines(err)) == 1 and "is nan" in err and "Traceback" not in err, err
    assert digest(workdir / "t") == old
    assert sorted(p.name for p in workdir.iterdir()) == ["t", "tiny.yaml"]


def test_sigint_during_overwrite_keeps_the_old_run(workdir):
    old = digest(workdir / "t")
    # 30 epochs: the run cannot finish between the check and the signal, even on a loaded machine
    proc = subprocess.Popen([sys.executable, "-m", "p2p_cli", *train_args(workdir, "--overwrite", "--epochs", "30")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(workdir / ".t.overwrite" / "t" / "config.yaml", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert digest(workdir / "t") == old
    assert sorted(p.name for p in workdir.iterdir()) == ["t", "tiny.yaml"]


def test_overwrite_that_succeeds_replaces_the_run(workdir, capsys):
    old = digest(workdir / "t")
    code, out, err = run_cli(train_args(workdir, "--overwrite", "--seed", "3"), capsys)
    assert code == 0, err
    assert f"{workdir / 't'}: test accuracy" in out
    assert digest(workdir / "t") != old and (workdir / "t" / "model.safetensors").is_file()
    assert "seed: 3" in (workdir / "t" / "config.yaml").read_text()
    assert sorted(p.name for p in workdir.iterdir()) == ["t", "tiny.yaml"]


# -- --resume -------------------------------------------------------------------------------------

def test_resume_with_another_config_names_the_key_and_cleans_stale_temporaries(tmp_path, tiny_config, capsys):
    from tests.test_cli_train import assert_killed_at_snapshot

    args = ["train-teacher", "--config", str(tiny_config), "--workdir", str(tmp_path), "--name", "k",
            "--device", "cpu", "-q"]
    run = tmp_path / "k"
    assert_killed_at_snapshot(args, run, step=1, total=5)
    stale = run / "checkpoints" / ".last.safetensors.x1y2.tmp"  # what a kill during a snapshot write leaves
    stale.write_bytes(b"half a snapshot")
    code, _, err = run_cli([*args, "--resume", "--epochs", "5"], capsys)
    assert code == 2 and error_lines(err) == [
        f"Error: --resume: config key 'epochs' is 5 but run '{run}' was started with 3; resume with the run's "
        "settings (its config.yaml) or start a new run"], err
    assert not stale.exists()
    assert "epochs: 3" in (run / "config.yaml").read_text()


# -- file systems ---------------------------------------------------------------------------------

def _namespace(script: str, folder: Path) -> list[str] | None:
    """``unshare … sh -c SCRIPT`` running a command with ``folder`` remounted by ``script`` ($0 is the
    folder), or None when this machine does not allow mount namespaces."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for flags in (["--mount"], ["--user", "--map-root-user", "--mount"]):
        prefix = [unshare, *flags, "sh", "-c", f'{script} && exec "$@"', str(folder)]
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return prefix
    return None


def test_full_disk_is_one_line_and_keeps_the_last_good_snapshot(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    from tests.conftest import TINY_CONFIG

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    # 45 MB: the first snapshot of the tiny run (~33 MB with its Adam states) fits, a second beside it does not
    prefix = _namespace('mount -t tmpfs -o size=45m tmpfs "$0"', disk)
    if prefix is None:
        pytest.skip("no mount namespace here for a small tmpfs")
    script = (f"{sys.executable} -m p2p_cli train-teacher --config {config} --workdir {disk} --name t --device cpu -q;"
              f" echo rc=$?; ls -a {disk}/t/checkpoints; {sys.executable} -c \"import json,sys;"
              f"from safetensors import safe_open;f=safe_open('{disk}/t/checkpoints/last.safetensors','pt');"
              f"print('step', json.loads(f.metadata()['snapshot'])['step'])\"; ls {disk}/t")
    done = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, text=True, timeout=300)
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: no space left on device: ") and \
        "Traceback" not in done.stderr, done.stderr
    assert "rc=2" in done.stdout
    assert ".tmp" not in done.stdout  # the half-written snapshot was removed
    step = int(done.stdout.split("step ")[1].split()[0])
    assert step >= 1  # the last good snapshot is kept for --resume
    assert "model.safetensors" not in done.stdout


def test_evaluate_works_in_a_read_only_workdir(workdir):
    if os.geteuid() != 0:
        prefix: list[str] | None = []
        os.chmod(workdir, 0o555)
        for p in workdir.rglob("*"):
            p.chmod(0o555 if p.is_dir() else 0o444)
    else:  # root ignores permissions: a read-only bind mount instead
        prefix = _namespace('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"', workdir)
        if prefix is None:
            pytest.skip("running as root and no mount namespace for a read-only bind mount")
    before = digest(workdir)
    try:
        evaluated = p2p("evaluate", "--workdir", str(workdir), "-m", "t", "--device", "cpu", prefix=prefix)
        assert evaluated.returncode == 0, evaluated.stderr
        assert "activation cache not written" in evaluated.stderr and "Traceback" not in evaluated.stderr
        trained = p2p(*train_args(workdir, "--name", "u"), prefix=prefix)
        assert trained.returncode == 2 and "Traceback" not in trained.stderr, trained.stderr
        assert error_lines(trained.stderr)[0].startswith(("Error: read-only file system: ", "Error: permission denied"))
    finally:
        if prefix == []:
            for p in [workdir, *workdir.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
    assert digest(workdir) == before


def test_enospc_in_the_safetensors_writer_is_an_oserror_and_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from p2p_cli.io.checkpoint import save_tensors

    path = tmp_path / "m.safetensors"
    save_tensors(path, {"w": torch.ones(2)}, {})
    old = path.read_bytes()

    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as caught:
        save_tensors(path, {"w": torch.zeros(2)}, {})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert os_error_message(caught.value) == (f"no space left on device: '{path}' "
                                              "(free some space or choose another --workdir)")
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_push_to_an_existing_name_that_fails_keeps_the_old_run(workdir, capsys, monkeypatch):
    """``push-prototypes --name p --overwrite`` writes beside the old ``p``; a disk that fills up
    while the prototype images are written leaves the old ``p`` as it was (and one line)."""
    import p2p_cli.workflows.push as push_workflow

    shutil.copytree(workdir / "t", workdir / "p")
    old = digest(workdir / "p")

    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(workdir / ".p.overwrite" / "p" / "prototypes"))

    monkeypatch.setattr(push_workflow, "save_prototype_images", full)
    code, _, err = run_cli(["push-prototypes", "--workdir", str(workdir), "-m", "t", "--name", "p", "--overwrite",
                            "--device", "cpu", "-q"], capsys)
    assert code == 2 and error_lines(err) == [
        f"Error: no space left on device: '{workdir / '.p.overwrite' / 'p' / 'prototypes'}' "
        "(free some space or choose another --workdir)"], err
    assert digest(workdir / "p") == old
    assert sorted(p.name for p in workdir.iterdir()) == ["p", "t", "tiny.yaml"]


def test_os_error_messages_name_the_path_and_the_remedy(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as caught:
        (tmp_path / "afile" / "out").mkdir(parents=True, exist_ok=True)
    assert os_error_message(caught.value).endswith(f": '{tmp_path / 'afile' / 'out'}' (a file is in the way of a "
                                                   "folder; choose another path)")
    assert os_error_message(OSError(errno.EROFS, "Read-only file system", "w/t")) == \
        "read-only file system: 'w/t' (choose a writable --workdir)"
    assert os_error_message(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "invalid cross-device link: 'a' → 'b'"
