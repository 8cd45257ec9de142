"""`p2p data synthesize` and `p2p data check` through the real entry point (a tiny dataset)."""

from __future__ import annotations

from tests.conftest import run_cli

TINY = ["--classes", "2", "--train-per-class", "1", "--test-per-class", "1", "--image-size", "48"]


def test_synthesize_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    code, stdout, err = run_cli(["data", "synthesize", "--out", str(out), *TINY], capsys)
    assert code == 0, err
    assert "2 classes × (1 train + 1 test) images, 48 px" in stdout
    (out / "stale.txt").write_text("from an earlier run")
    code, _, err = run_cli(["data", "synthesize", "--out", str(out), *TINY], capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "stale.txt").is_file()
    code, _, err = run_cli(["data", "synthesize", "--out", str(out), *TINY, "--overwrite"], capsys)
    assert code == 0, err
    assert not (out / "stale.txt").exists() and (out / "images.txt").is_file()


def test_check_with_quiet_reports_and_exits_by_status(tmp_path, capsys):
    out = tmp_path / "d"
    code, _, err = run_cli(["data", "synthesize", "--out", str(out), *TINY, "-q"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["data", "check", "--dataset", "cub", "--data-root", str(out), "-q"], capsys)
    assert code == 0, err
    assert "every listed image exists" in stdout
    (out / "images.txt").unlink()
    code, _, _ = run_cli(["data", "check", "--dataset", "cub", "--data-root", str(out), "--quiet"], capsys)
    assert code != 0
