"""`p2p quickstart --preset tiny`: the whole pipeline, its report, and re-running it; the verdict."""

from __future__ import annotations

import json
import math
import re

import pytest

from p2p_cli.evaluation.comparison import seed_statistics, verdict
from p2p_cli.workflows.quickstart import ROLES, run_name, seed_config
from tests.conftest import run_cli


def assert_verdict_matches_the_numbers(report: dict) -> None:
    """transferred ⇔ the Proto2Proto student's AJS at the headline τ and its PMS both beat the baseline's."""
    v, tau = report["verdict"], report["headline_tau_key"]
    b, p, t = (report["models"][name] for name in ("baseline", "proto2proto", "teacher"))
    assert v["tau"] == tau and tau in b["ajs"] and tau in p["ajs"]
    assert v["ajs_higher"] is (p["ajs"][tau] > b["ajs"][tau])
    assert v["pms_higher"] is (p["pms"] > b["pms"])
    assert v["accuracy_not_lower"] is (p["acc"] >= b["acc"])
    assert v["transferred"] is (v["ajs_higher"] and v["pms_higher"])
    for number in (p["ajs"][tau], b["ajs"][tau], p["pms"], b["pms"], p["acc"], b["acc"], t["acc"]):
        assert f"{number:.3f}" in v["text"]
    if v["transferred"]:
        assert ("at no loss of accuracy" in v["text"]) is v["accuracy_not_lower"]
        assert ("holds only in part" in v["text"]) is not v["accuracy_not_lower"]
    else:
        assert "did not transfer" in v["text"]


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
    assert_verdict_matches_the_numbers(report)
    assert report["verdict"]["text"] in out and "report.html" in out
    page = (report_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|url)\(', page)
    # outputs that travel: the page under 3 MB with no image embedded twice, each figure under 1 MB
    assert (report_dir / "report.html").stat().st_size < 3_000_000 and len(set(sources)) == len(sources)
    figures = list((report_dir / "figures").rglob("*.png"))
    assert figures and all(f.stat().st_size < 1_000_000 for f in figures)
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


def _report(acc, ajs, pms, tau="0.1"):
    """An evaluate report with rows teacher, baseline and proto2proto: ``acc``/``ajs``/``pms`` are
    (teacher, baseline, proto2proto) triples; AAP mirrors AJS."""
    return {"models": {name: {"acc": a, "aap": {tau: j / 2}, "ajs": {tau: j}, "pms": m}
                       for name, a, j, m in zip(ROLES, acc, ajs, pms, strict=True)}}


@pytest.mark.parametrize(("ajs", "pms", "acc", "transferred", "says"), [
    ((1.0, 0.40, 0.55), (1.0, 0.30, 0.50), (0.9, 0.80, 0.80), True, "at no loss of accuracy"),
    ((1.0, 0.40, 0.55), (1.0, 0.30, 0.50), (0.9, 0.80, 0.79), True, "holds only in part"),
    ((1.0, 0.40, 0.40), (1.0, 0.30, 0.50), (0.9, 0.80, 0.85), False, "did not transfer on AJS:"),
    ((1.0, 0.40, 0.55), (1.0, 0.50, 0.50), (0.9, 0.80, 0.85), False, "did not transfer on PMS:"),
    ((1.0, 0.40, 0.30), (1.0, 0.50, 0.40), (0.9, 0.80, 0.85), False, "did not transfer on AJS and PMS:"),
])
def test_verdict_follows_the_numbers(ajs, pms, acc, transferred, says):
    report = _report(acc, ajs, pms)
    v = verdict(report, "0.1")
    assert v["transferred"] is transferred and says in v["text"]
    assert v["ajs_higher"] is (ajs[2] > ajs[1]) and v["pms_higher"] is (pms[2] > pms[1])
    assert v["accuracy_not_lower"] is (acc[2] >= acc[1]) and v["tau"] == "0.1"
    assert f"AJS {ajs[2]:.3f} against {ajs[1]:.3f}" in v["text"] and f"({ajs[2] - ajs[1]:+.3f})" in v["text"]
    assert f"PMS {pms[2]:.3f} against {pms[1]:.3f}" in v["text"]
    assert f"Proto2Proto {acc[2]:.3f}, baseline {acc[1]:.3f}, teacher {acc[0]:.3f}" in v["text"]


def test_seed_statistics_mean_and_sample_std_per_role():
    first = _report((0.9, 0.6, 0.7), (1.0, 0.2, 0.4), (1.0, 0.3, 0.5))
    second = {"models": {run_name(role, 1): row for role, row in
                         _report((0.7, 0.4, 0.5), (1.0, 0.4, 0.6), (1.0, 0.5, 0.7))["models"].items()}}
    del second["models"]["teacher-seed1"]  # a missing row is skipped
    stats = seed_statistics([first, second], "0.1", ROLES, run_name)
    assert stats["teacher"]["acc"] == {"mean": 0.9, "std": 0.0, "n": 1}
    assert stats["baseline"]["acc"]["mean"] == pytest.approx(0.5)
    assert stats["baseline"]["acc"]["std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.6, 0.4
    assert stats["proto2proto"]["ajs"]["mean"] == pytest.approx(0.5)
    assert stats["proto2proto"]["aap"]["mean"] == pytest.approx(0.25)
    assert stats["proto2proto"]["pms"] == {"mean": pytest.approx(0.6), "std": pytest.approx(math.sqrt(0.02)), "n": 2}


def test_role_configs_layer_each_roles_keys_over_the_shared_ones():
    from p2p_cli.workflows.presets import PRESETS, role_configs

    preset = {"config": {"epochs": 3, "image_size": 64}, "teacher": "a", "student": "b",
              "teacher_config": {"weights": "package:t", "epochs": 4}, "student_config": {"weights": "package:s"}}
    teacher, student = role_configs(preset)
    assert teacher == {"epochs": 4, "image_size": 64, "weights": "package:t"}
    assert student == {"epochs": 3, "image_size": 64, "weights": "package:s"}
    assert role_configs({"config": {"epochs": 3}}) == ({"epochs": 3}, {"epochs": 3})
    for preset in PRESETS.values():  # every built-in preset's role configs are valid configs
        for cfg in role_configs(preset):
            seed_config(cfg, 0)
