"""`p2p evaluate`: the evaluation pass, the metric assembly, the cache, and the command end to end."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from p2p_cli.cli.command import expand_variadic
from p2p_cli.errors import P2PError
from p2p_cli.evaluation.activations import (
    NOISE_CLIP,
    Activations,
    PartArgmax,
    PassJob,
    compute_activations,
    concat_parts,
    stability_noise,
)
from p2p_cli.evaluation.options import parse_metrics, parse_taus, tau_key
from p2p_cli.evaluation.report import add_deltas, headline_tau, metric_report, part_scores
from p2p_cli.io.checkpoint import weights_hash
from p2p_cli.metrics.parts import HALF_SIDE_FRAC
from p2p_cli.metrics.prototype_matching import pms
from p2p_cli.models.factory import load_model, save_model
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig
from p2p_cli.runtime.device import Runtime
from tests.conftest import run_cli, teacher_workdir

CPU = Runtime(device=torch.device("cpu"), amp_dtype=None, channels_last=False)

# ---------------------------------------------------------------------------------------------
# option parsing
# ---------------------------------------------------------------------------------------------


FLAGS = ("--model", "-m", "--metrics", "--tau")


def test_tau_keys_and_parsing():
    assert [tau_key(t) for t in (0.01, 1.0, 0.45, 100.0, math.inf)] == ["0.01", "1", "0.45", "100", "inf"]
    assert parse_taus(["0.1", "inf", "1,3", "0.1"]) == (0.1, math.inf, 1.0, 3.0)
    assert parse_taus(None) == (0.01, 0.1, 0.2, 0.45, 1.0, 3.0, 5.0, math.inf)
    for bad in (["-1"], ["nan"], ["x"], ["-inf"]):
        with pytest.raises(P2PError):
            parse_taus(bad)


def test_metric_parsing():
    assert parse_metrics(["pms", "acc"]) == ("acc", "pms")
    assert parse_metrics(["all"])[:4] == ("acc", "aap", "ajs", "pms") and len(parse_metrics(["all"])) == 8
    assert parse_metrics(["acc,stability"]) == ("acc", "stability")
    with pytest.raises(P2PError, match="did you mean 'ajs'"):
        parse_metrics(["ajx"])


def test_variadic_flags_expand_until_the_next_option():
    args = ["--model", "a", "b", "--metrics", "acc", "aap", "--tau", "0.1", "inf", "--json", "x.json", "-q"]
    assert expand_variadic(args, FLAGS) == ["--model", "a", "--model", "b", "--metrics", "acc", "--metrics", "aap",
                                     "--tau", "0.1", "--tau", "inf", "--json", "x.json", "-q"]
    # negative numbers are values (rejected later with a clear message), --x=y forms pass through
    assert expand_variadic(["--tau", "1", "-1", "--tau=3"], ("--tau",)) == ["--tau", "1", "--tau", "-1", "--tau=3"]


# ---------------------------------------------------------------------------------------------
# metrics from arrays, against direct loop-and-set implementations
# ---------------------------------------------------------------------------------------------


def _acts(argmin, dist, labels=None, grid=(2, 2), k=2) -> Activations:
    argmin = np.asarray(argmin, dtype=np.int32)
    n = argmin.shape[0]
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    logits = np.eye(k, dtype=np.float32)[labels]
    return Activations(argmin, np.asarray(dist, dtype=np.float32), labels, logits, grid, 32)


def _active_sets(a: Activations, tau: float) -> list[set[int]]:
    return [{int(a.argmin[n, j]) for j in range(a.argmin.shape[1]) if float(a.min_dist[n, j]) <= tau}
            for n in range(a.argmin.shape[0])]


@st.composite
def _pair(draw):
    n = draw(st.integers(1, 12))
    m_t, m_s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vals = [0.0, 0.01, 0.1, 0.5, 1.0, 4.0]
    labels = rng.integers(0, 2, n)
    t = _acts(rng.integers(0, 4, (n, m_t)), rng.choice(vals, (n, m_t)), labels)
    s = _acts(rng.integers(0, 4, (n, m_s)), rng.choice(vals, (n, m_s)), labels)
    return t, s


@settings(max_examples=60, deadline=None, database=None)
@given(_pair(), st.sampled_from(["paper", "reference"]))
def test_report_matches_direct_set_definitions(pair, fidelity):
    t, s = pair
    taus = (0.0, 0.1, 1.0, math.inf)
    rep = metric_report({"T": t, "S": s}, "T", metrics=("acc", "aap", "ajs", "pms"), taus=taus, fidelity=fidelity)
    assert rep["taus"] == ["0", "0.1", "1", "inf"] and rep["teacher"] == "T" and list(rep["models"]) == ["T", "S"]
    for tau in taus:
        st_, ss = _active_sets(t, tau), _active_sets(s, tau)
        assert rep["models"]["S"]["aap"][tau_key(tau)] == pytest.approx(np.mean([len(x) for x in ss]))
        both_empty = 1.0 if fidelity == "paper" else 0.0
        expect = np.mean([len(a & b) / len(a | b) if a | b else both_empty for a, b in zip(st_, ss, strict=True)])
        assert rep["models"]["S"]["ajs"][tau_key(tau)] == pytest.approx(expect)
        self_expect = np.mean([1.0 if a else both_empty for a in st_])
        assert rep["models"]["T"]["ajs"][tau_key(tau)] == pytest.approx(self_expect)
    assert rep["models"]["S"]["pms"] == pytest.approx(pms(t.argmin, s.argmin, 4).score)
    assert rep["models"]["T"]["pms"] == pytest.approx(1.0)
    assert rep["models"]["S"]["pms_matched"] == min(t.argmin.shape[1], s.argmin.shape[1])
    assert rep["models"]["S"]["acc"] == 1.0  # one-hot logits of the labels


def test_edge_cases_inf_no_active_patch_and_fewer_prototypes():
    # image 0: the teacher is active at τ = 0.1 (loc 1), the student not; image 1: nobody is
    t = _acts([[1, 1, 2], [0, 3, 3]], [[0.05, 0.5, 2.0], [0.5, 0.7, 3.0]])
    s = _acts([[1, 2], [3, 3]], [[0.2, 0.3], [0.9, 0.9]])  # a pruned student: 2 prototypes, not 3
    notes: list[str] = []
    rep = metric_report({"T": t, "S": s}, "T", metrics=("aap", "ajs", "pms"), taus=(0.1, math.inf), notes=notes)
    row = rep["models"]["S"]
    assert rep["models"]["T"]["aap"] == {"0.1": 0.5, "inf": 2.0}  # τ = inf: every distinct argmin
    assert row["aap"] == {"0.1": 0.0, "inf": 1.5}
    # τ = 0.1: image 0 has one empty set (0), image 1 both empty (paper: 1)
    assert row["ajs"]["0.1"] == pytest.approx(0.5)
    assert row["ajs"]["inf"] == pytest.approx((1.0 + 0.5) / 2)  # T {1,2},{0,3}; S {1,2},{3}
    assert rep["models"]["T"]["ajs"] == {"0.1": 1.0, "inf": 1.0}
    ref = metric_report({"T": t, "S": s}, "T", metrics=("ajs",), taus=(0.1,), fidelity="reference")
    assert ref["models"]["S"]["ajs"]["0.1"] == 0.0 and ref["models"]["T"]["ajs"]["0.1"] == 0.5
    assert row["pms_matched"] == 2 and any("min(mT, mS) = 2" in n for n in notes)


def test_inf_ajs_on_explicit_sets():
    t = _acts([[1, 1, 2], [0, 3, 3]], [[0.05, 0.5, 2.0], [0.5, 0.7, 3.0]])
    s = _acts([[1, 2], [3, 3]], [[0.2, 0.3], [0.9, 0.9]])
    # τ = inf: T sets {1, 2}, {0, 3}; S sets {1, 2}, {3} → (2/2 + 1/2) / 2
    rep = metric_report({"T": t, "S": s}, "T", metrics=("ajs",), taus=(math.inf,))
    assert rep["models"]["S"]["ajs"]["inf"] == pytest.approx(0.75)


def test_grid_mismatch_gives_none_and_a_note_and_deltas_use_the_baseline():
    t = _acts([[0, 1]], [[0.1, 0.1]])
    b = _acts([[0, 2]], [[0.1, 0.1]])
    s = _acts([[0, 1]], [[0.1, 0.1]])
    odd = _acts([[0, 5]], [[0.1, 0.1]], grid=(3, 3))
    notes: list[str] = []
    rep = metric_report({"T": t, "B": b, "S": s, "O": odd}, "T", metrics=("aap", "ajs", "pms"), taus=(1.0,),
                        notes=notes)
    assert rep["models"]["O"]["ajs"] == {"1": None} and rep["models"]["O"]["pms"] is None
    assert rep["models"]["O"]["aap"] == {"1": 2.0}
    assert any("'O' has a 3×3 grid" in n for n in notes)
    add_deltas(rep, "B")
    assert rep["models"]["S"]["delta"]["ajs"]["1"] == pytest.approx(1.0 - 1 / 3)
    assert "delta" not in rep["models"]["T"] and "delta" not in rep["models"]["B"]
    assert rep["models"]["O"]["delta"]["ajs"]["1"] is None


def test_files_fingerprint_changes_with_the_files(tmp_path):
    import os

    from p2p_cli.data.index import Sample
    from p2p_cli.evaluation.cache import files_fingerprint

    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for p in paths:
        p.write_bytes(b"x")
    samples = [Sample(p, i % 2) for i, p in enumerate(paths)]
    before = files_fingerprint(samples)
    assert files_fingerprint(list(samples)) == before
    os.utime(paths[1], ns=(1, 1))
    assert files_fingerprint(samples) != before
    assert files_fingerprint([Sample(p, 0) for p in paths]) != files_fingerprint(samples)  # labels count


def test_headline_tau_skips_thresholds_where_the_teacher_is_mostly_inactive():
    t = _acts([[0, 1], [2, 3], [1, 1]], [[0.05, 2.0], [0.5, 2.0], [0.4, 0.3]])
    tau, why = headline_tau(t, (0.01, 0.1, 1.0, math.inf))
    assert tau == 1.0 and "≥ 90%" in why


def test_part_scores_against_a_direct_computation():
    # 2 prototypes (class 0 and class 1), 4 images: 0, 1 of class 0; 2, 3 of class 1; image side 224
    model = type("M", (), {"num_prototypes": 2})()
    half = HALF_SIDE_FRAC * 224  # 36 px
    parts = np.array([
        [[10, 10, 1], [100, 100, 1]],
        [[12, 14, 1], [200, 200, 0]],
        [[50, 50, 1], [150, 150, 1]],
        [[60, 60, 1], [150, 150, 1]],
    ], dtype=np.float32)
    clean = PartArgmax(np.array([0, 0, 1, 1], np.int32), np.array([0, 1, 2, 3], np.int32),
                       np.array([[10, 10], [10, 10], [150, 150], [150, 150]], np.int32))
    noisy = PartArgmax(clean.proto, clean.image, np.array([[10, 10], [200, 10], [150, 150], [150, 150 + half]],
                                                           np.int32))
    got = part_scores(model, parts, 224, clean, noisy)
    # prototype 0 covers part 0 in both its images → consistent; prototype 1 covers part 1 in both → consistent
    assert got["consistency"] == 100.0
    # prototype 0: image 1's row changes under noise (part 0 lost) → 1/2; prototype 1: unchanged (border
    # included) → 1
    assert got["stability"] == pytest.approx((0.5 + 1.0) / 2 * 100)
    inconsistent = PartArgmax(clean.proto, clean.image, np.array([[10, 10], [120, 120], [0, 0], [223, 0]], np.int32))
    assert part_scores(model, parts, 224, inconsistent, None)["consistency"] == 0.0


def test_noise_is_seeded_per_image_and_clipped():
    a = stability_noise(torch.tensor([3, 7]), (3, 8, 8), seed=5)
    b = stability_noise(torch.tensor([7]), (3, 8, 8), seed=5)
    assert torch.equal(a[1], b[0])  # independent of the batch it is in
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(stability_noise(torch.tensor([7]), (3, 8, 8), seed=6), b)
    big = stability_noise(torch.arange(50), (3, 16, 16), seed=0)
    assert big.abs().max() <= NOISE_CLIP and 0.15 < float(big.std()) < 0.2


class _Images:
    """Random uint8 images with labels, cut into evaluation batches."""

    def __init__(self, n: int, size: int, k: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
        self.labels = torch.arange(n) % k

    def batches(self, size: int):
        n = len(self.images)
        return [(self.images[i:i + size], self.labels[i:i + size], torch.arange(i, min(n, i + size)))
                for i in range(0, n, size)]


def test_image_batches_decode_in_order_like_load_image(tmp_path):
    from PIL import Image

    from p2p_cli.data.images import load_image
    from p2p_cli.data.index import Sample
    from p2p_cli.evaluation.images import image_batches

    rng = np.random.default_rng(0)
    samples = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        samples.append(Sample(path, i % 2, bbox=(2.0, 3.0, 10.0, 12.0)))
    got = list(image_batches(samples, 16, True, 2, threads=2))
    assert [len(b[0]) for b in got] == [2, 2, 1]
    images = torch.cat([b[0] for b in got])
    assert torch.equal(torch.cat([b[2] for b in got]), torch.arange(5))
    assert torch.equal(torch.cat([b[1] for b in got]), torch.tensor([0, 1, 0, 1, 0]))
    for i, s in enumerate(samples):
        assert torch.equal(images[i], load_image(s, 16, crop_bbox=True))


def test_evaluation_pass_matches_a_direct_forward_and_does_not_depend_on_batching():
    torch.manual_seed(0)
    model = ProtoPNet(ProtoPNetConfig("resnet18", 3, prototypes_per_class=2, prototype_depth=8, feature_stride=16))
    model.eval()
    ds = _Images(7, 32, 3)
    runs = []
    for batch in (2, 7):
        job = PassJob(model, 7, base=True, clean=True, noisy=True)
        compute_activations([job], ds.batches(batch), CPU, n_images=7, image_size=32, noise_seed=1)
        runs.append(job)
    a, b = runs
    np.testing.assert_array_equal(a.argmin, b.argmin)
    np.testing.assert_allclose(a.min_dist, b.min_dist, rtol=1e-5, atol=1e-6)
    from p2p_cli.data.transforms import normalize

    with torch.no_grad():
        out = model(normalize(ds.images))
    flat = out.distances.flatten(2)
    np.testing.assert_array_equal(a.argmin, flat.argmin(2).numpy())
    np.testing.assert_allclose(a.min_dist, out.min_distances.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.logits, out.logits.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(a.labels, ds.labels.numpy())
    assert a.grid == (2, 2) and a.argmin.dtype == np.int32 and a.min_dist.dtype == np.float32
    ca, cb = concat_parts(a.parts["clean"]), concat_parts(b.parts["clean"])
    na, nb = concat_parts(a.parts["noisy"]), concat_parts(b.parts["noisy"])
    np.testing.assert_array_equal(ca.xy, cb.xy)
    np.testing.assert_array_equal(na.xy, nb.xy)
    # one row per (prototype, own-class image): 2 prototypes per class, every image once per own prototype
    assert len(ca.proto) == 2 * 7 and np.array_equal(ca.proto, na.proto)
    own = model.class_identity.numpy()[ca.proto, ds.labels.numpy()[ca.image]]
    assert own.all()
    assert ((ca.xy >= 0) & (ca.xy < 32)).all()


# ---------------------------------------------------------------------------------------------
# end to end: tiny runs trained with the real commands
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(shared_teacher, tmp_path_factory) -> Path:
    """Teacher `t` (the session's, train-teacher), Proto2Proto student `s` (distill), baseline `b`
    (train-teacher, another seed, shorter) and `pruned` (s with its last 2 prototypes removed)."""
    work = teacher_workdir(shared_teacher, tmp_path_factory.mktemp("evaluate"), "t")
    common = ["--config", str(work / "tiny.yaml"), "--workdir", str(work), "--device", "cpu", "-q"]
    for args in (["distill", "--teacher", "t", "--student", "resnet18", "--method", "proto2proto", "--name", "s"],
                 ["train-teacher", "--name", "b", "--seed", "1", "--epochs", "1", "--last-layer-epochs", "1"]):
        code, _, err = run_cli([*args, *common])
        assert code == 0, "training failed"
    # a "pruned" student: s without its last two prototypes (last-layer columns dropped too)
    student, meta = load_model(work / "s" / "model.safetensors")
    keep = student.num_prototypes - 2
    pruned = ProtoPNet(student.config, class_identity=student.class_identity[:keep])
    state = {k: v for k, v in student.state_dict().items()}
    state["prototype_vectors"] = state["prototype_vectors"][:keep]
    state["class_identity"] = state["class_identity"][:keep]
    state["last_layer.weight"] = state["last_layer.weight"][:, :keep]
    pruned.load_state_dict(state)
    (work / "pruned").mkdir()
    shutil.copy(work / "s" / "config.yaml", work / "pruned" / "config.yaml")
    save_model(work / "pruned" / "model.safetensors", pruned, stage="final", class_names=meta["class_names"],
               extra={"teacher": meta["teacher"], "method": "proto2proto"})
    return work


def _evaluate(work: Path, capsys, *args: str) -> tuple[int, str, str, dict]:
    out_json = work / "out.json"
    out_json.unlink(missing_ok=True)
    code, out, err = run_cli(["evaluate", "--workdir", str(work), "--device", "cpu", "--json", str(out_json), *args],
                             capsys)
    report = json.loads(out_json.read_text()) if code == 0 else {}
    return code, out, err, report


@pytest.mark.slow
def test_evaluate_table_json_and_saved_activations(work, capsys):
    acts_dir = work / "acts"
    code, out, err, rep = _evaluate(work, capsys, "--model", "b", "s", "--tau", "0.1", "1", "inf", "--chance",
                                    "--save-activations", str(acts_dir))
    assert code == 0, err
    # the documented JSON shape
    assert rep["taus"] == ["0.1", "1", "inf"] and rep["teacher"] == "t" and rep["baseline"] == "b"
    assert list(rep["models"]) == ["t", "b", "s"]  # teacher (recorded in s's run) first
    for name, row in rep["models"].items():
        assert list(row)[:4] == ["acc", "aap", "ajs", "pms"], name
        assert 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["pms"] <= 1.0
        assert set(row["aap"]) == set(row["ajs"]) == {"0.1", "1", "inf"}
        assert all(0.0 <= v <= 1.0 for v in row["ajs"].values())
        assert sum(map(sum, row["confusion"])) == rep["num_images"] == 9
    t, b, s = (rep["models"][k] for k in ("t", "b", "s"))
    assert t["ajs"] == {"0.1": 1.0, "1": 1.0, "inf": 1.0} and t["pms"] == 1.0
    assert (t["role"], b["role"], s["role"], s["method"]) == ("teacher", "baseline", "student", "proto2proto")
    assert s["delta"]["pms"] == pytest.approx(s["pms"] - b["pms"])
    assert s["delta"]["ajs"]["inf"] == pytest.approx(s["ajs"]["inf"] - b["ajs"]["inf"])
    assert 0.0 <= rep["chance"]["pms"] <= 1.0
    assert "teacher" in out and "difference to the baseline 'b'" in out and "AJS(τ)" in out
    # saved activations: documented tensors, shapes and metadata, equal to a direct forward pass
    for name in ("t", "b", "s"):
        path = acts_dir / f"{name}.safetensors"
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        assert set(tensors) == {"argmin", "min_dist", "labels", "logits"}
        assert tensors["argmin"].shape == (9, 6) and tensors["argmin"].dtype == torch.int32
        assert tensors["min_dist"].dtype == torch.float32 and tensors["logits"].shape == (9, 3)
        assert json.loads(meta["grid"]) == [2, 2] and meta["format"] == "p2p-activations"
    _check_against_direct_forward(work, acts_dir / "s.safetensors")
    from p2p_cli.evaluation.cache import load_activations

    act, meta = load_activations(acts_dir / "s.safetensors")
    assert act.grid == (2, 2) and meta["model"] == "s" and meta["num_images"] == 9


def _check_against_direct_forward(work: Path, path: Path) -> None:
    from p2p_cli.data.loaders import build_datasets
    from p2p_cli.io.config import config_from_dict

    cfg = config_from_dict(yaml.safe_load((work / "s" / "config.yaml").read_text()), source="test")
    data = build_datasets(cfg)
    model, _ = load_model(work / "s" / "model.safetensors")
    images = torch.stack([data.test[i][0] for i in range(len(data.test))])
    with torch.no_grad():
        out = model(images)  # the run's precision is fp32: same numbers as the evaluation pass
    with safe_open(str(path), framework="pt") as fh:
        np.testing.assert_array_equal(fh.get_tensor("argmin").numpy(), out.distances.flatten(2).argmin(2).numpy())
        np.testing.assert_allclose(fh.get_tensor("min_dist").numpy(), out.min_distances.numpy(), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_array_equal(fh.get_tensor("labels").numpy(), [data.test[i][1] for i in range(9)])


@pytest.mark.slow
def test_teacher_against_itself_gives_ajs_and_pms_of_one(work, capsys):
    code, _, err, rep = _evaluate(work, capsys, "--model", "t", "--teacher", "t", "--tau", "0", "0.1", "1", "inf")
    assert code == 0, err
    row = rep["models"]["t"]
    assert list(rep["models"]) == ["t"]
    assert row["ajs"] == {"0": 1.0, "0.1": 1.0, "1": 1.0, "inf": 1.0} and row["pms"] == 1.0
    # --fidelity reference: images where the teacher has no active patch count 0, not 1
    code, _, err, ref = _evaluate(work, capsys, "--model", "t", "--teacher", "t", "--tau", "0", "inf",
                                  "--fidelity", "reference")
    assert code == 0, err
    assert ref["models"]["t"]["aap"]["0"] == 0.0 and ref["models"]["t"]["ajs"]["0"] == 0.0
    assert ref["models"]["t"]["ajs"]["inf"] == 1.0


@pytest.mark.slow
def test_json_is_written_before_the_table_so_a_closed_pipe_loses_nothing(work, capsys, monkeypatch):
    import p2p_cli.cli.evaluate as evaluate_cli

    def closed_stdout(report, console=None):  # what printing into `| head` ends in once head has exited
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(evaluate_cli, "print_report", closed_stdout)
    out_json = work / "piped.json"
    code, _, err = run_cli(["evaluate", "--workdir", str(work), "--device", "cpu", "--model", "t", "--teacher", "t",
                            "--json", str(out_json), "-q"], capsys)
    assert code == 1 and "Traceback" not in err  # click ends a command whose stdout is gone with exit 1
    assert json.loads(out_json.read_text())["models"]["t"]["pms"] == 1.0


@pytest.mark.slow
def test_cache_reuse_and_a_pruned_student(work, capsys):
    code, _, err, first = _evaluate(work, capsys, "--model", "s", "b", "--no-cache")
    assert code == 0, err
    assert all(r["activations"] == "computed" for r in first["models"].values())
    code, _, err, again = _evaluate(work, capsys, "--model", "s", "b")
    assert code == 0, err
    code, out, err, more = _evaluate(work, capsys, "--model", "s", "b", "pruned")
    assert code == 0, err
    assert {k: r["activations"] for k, r in more["models"].items()} == \
        {"t": "cached", "s": "cached", "b": "cached", "pruned": "computed"}
    for name in ("t", "s", "b"):
        for key in ("acc", "aap", "ajs", "pms"):
            assert more["models"][name][key] == first["models"][name][key] == again["models"][name][key]
    pr = more["models"]["pruned"]
    assert pr["num_prototypes"] == 4 and pr["pms_matched"] == 4
    assert "min(mT, mS) = 4" in out
    cache = work / ".cache" / "activations"
    assert len(list(cache.glob("*-base.safetensors"))) == 4
    hashes = {r["weights_hash"] for r in more["models"].values()}
    assert len(hashes) == 4 and weights_hash(load_model(work / "t" / "model.safetensors")[0].state_dict()) in hashes


@pytest.mark.slow
def test_all_metrics_on_the_synthetic_parts(work, capsys):
    code, out, err, rep = _evaluate(work, capsys, "--model", "s", "--metrics", "all", "--no-cache")
    assert code == 0, err
    for row in rep["models"].values():
        assert 0.0 <= row["consistency"] <= 100.0 and 0.0 <= row["stability"] <= 100.0
        assert 0.0 <= row["explanation_size"] <= row["num_prototypes"] and 0.0 <= row["sparsity"] <= 1.0
        assert len(row["per_class_acc"]) == 3
    code, _, err, again = _evaluate(work, capsys, "--model", "s", "--metrics", "stability", "consistency",
                                    "--no-cache")
    assert code == 0, err
    for name, row in again["models"].items():  # seeded noise: reruns agree
        assert row["stability"] == rep["models"][name]["stability"]
        assert row["consistency"] == rep["models"][name]["consistency"]
        assert "acc" not in row
    # with the cache: base arrays and clean arg-max pixels first, then a noisy-only pass is added
    code, _, err, base = _evaluate(work, capsys, "--model", "s", "--metrics", "acc", "aap", "consistency")
    assert code == 0, err
    assert base["models"]["s"]["consistency"] == rep["models"]["s"]["consistency"]
    code, _, err, both = _evaluate(work, capsys, "--model", "s", "--metrics", "acc", "aap", "stability")
    assert code == 0, err
    for name, row in both["models"].items():
        assert row["acc"] == base["models"][name]["acc"] == rep["models"][name]["acc"]
        assert row["aap"] == base["models"][name]["aap"] == rep["models"][name]["aap"]
        assert row["stability"] == rep["models"][name]["stability"]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "s", "--metrics", "acc", "ajx"], "unknown metric 'ajx' (did you mean 'ajs'?)"),
    (["--model", "s", "--tau", "0.1", "-1"], "--tau values must be ≥ 0"),
    (["--model", "nope"], "model 'nope' not found"),
    (["--model", "s", "--split", "val"], "--split must be test or train"),
    (["--model", "s", "--headline-tau", "2"], "--headline-tau 2 is not among --tau"),
])
@pytest.mark.slow
def test_user_errors_are_one_line(work, capsys, args, message):
    code, _, err, _ = _evaluate(work, capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
