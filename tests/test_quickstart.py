"""`p2p quickstart --preset tiny`: the whole pipeline, its report, and re-running it."""

from __future__ import annotations

import json
import re

import pytest

from tests.test_cli_train import run_cli


@pytest.mark.slow
def test_quickstart_writes_a_self_contained_report_and_reruns_without_recomputing(tmp_path, capsys):
    args = ["quickstart", "--preset", "tiny", "--workdir", str(tmp_path), "--device", "cpu", "-q"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    for run in ("teacher", "baseline", "proto2proto", "proto2proto-pruned"):
        assert (tmp_path / run / "model.safetensors").is_file(), run
    report_dir = tmp_path / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert report["teacher"] == "teacher"
    assert set(report["models"]) >= {"teacher", "baseline", "proto2proto", "proto2proto-pruned"}
    assert all(isinstance(k, str) for k in report["models"]["baseline"]["ajs"])
    assert report["models"]["teacher"]["pms"] == pytest.approx(1.0)
    assert report["models"]["proto2proto-pruned"]["num_prototypes"] == 3
    assert isinstance(report["verdict"]["transferred"], bool) and report["verdict"]["text"]
    assert "report.html" in out
    page = (report_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|url)\(', page)
    md = (report_dir / "report.md").read_text()
    assert "Table 2" in md and "Table 3" in md and "Verdict" in md
    # a second run reuses every finished run and writes the same numbers
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    again = json.loads((report_dir / "report.json").read_text())
    assert set(again["timings"]["skipped"]) == {"teacher", "baseline", "proto2proto", "proto2proto-pruned"}
    def numbers(rep):  # everything but where the activations came from (computed, then cached)
        return {name: {k: v for k, v in row.items() if k != "activations"} for name, row in rep["models"].items()}

    assert numbers(again) == numbers(report) and again["verdict"] == report["verdict"]
