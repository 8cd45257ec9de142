"""`p2p robustness` (Hoffmann et al. 2021): the head-on-stomach attack stays in its ε-ball and its
success criterion is the paper's; the JPEG numbers are reproducible; the training remedies run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from p2p_cli.attacks.fgsm import fgsm_examples
from p2p_cli.attacks.head_on_stomach import AttackSettings, head_on_stomach
from p2p_cli.attacks.jpeg import jpeg_statistics, spearman_rows
from p2p_cli.attacks.pgd import attempt_generator, random_start
from p2p_cli.attacks.pixels import forward_pixels, normalize_pixels, parse_budget, to_pixels
from p2p_cli.attacks.regions import (
    best_cell_box,
    best_match_region,
    explanation_moved,
    region_box,
    region_maxima,
    region_pixel_mask,
    stomach_objective,
)
from p2p_cli.attacks.testset import raw_test_set
from p2p_cli.attacks.transfer import transfer_entry
from p2p_cli.data.loaders import load_dataset_index
from p2p_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, jpeg_compress
from p2p_cli.errors import P2PError
from p2p_cli.io.config import build_config, with_overrides
from p2p_cli.models.protopnet import ProtoPNet, ProtoPNetConfig
from p2p_cli.models.runs import load_run
from p2p_cli.runtime.device import make_runtime
from tests.conftest import run_cli, teacher_workdir

EPS = 8 / 255


# ----------------------------------------------------------------------------- pure functions


def test_budgets_parse_fractions_and_reject_nonsense():
    assert parse_budget("8/255", "eps") == pytest.approx(8 / 255)
    assert parse_budget("0.5", "eps") == 0.5
    for bad in ("abc", "2", "-1/255", "1/0"):
        with pytest.raises(P2PError, match="--eps"):
            parse_budget(bad, "eps")
    cfg = build_config({"adv_eps": "4/255", "adversarial": "fgsm", "augment_jpeg": 0.5})
    assert cfg.adv_eps == pytest.approx(4 / 255) and cfg.adv_step == pytest.approx(10 / 255)
    with pytest.raises(P2PError, match="augment_jpeg"):
        build_config({"augment_jpeg": 1.5})
    with pytest.raises(P2PError, match="adversarial"):
        build_config({"adversarial": "pgd"})


def test_success_criterion_on_hand_checkable_maps():
    # S = {(0, 0)}: the explanation moved iff some other cell is strictly more similar than S's best
    region = torch.zeros(4, 2, 2, dtype=torch.bool)
    region[:, 0, 0] = True
    maps = torch.tensor([[[5.0, 1.0], [1.0, 1.0]],   # best match still in S
                         [[5.0, 1.0], [6.0, 1.0]],   # (1, 0) beats S -> moved
                         [[5.0, 5.0], [1.0, 1.0]],   # a tie is not a move
                         [[0.5, 0.2], [0.1, 0.7]]])  # every value lower, but (1, 1) beats S -> moved
    assert explanation_moved(maps, region).tolist() == [False, True, False, True]
    inside, outside = region_maxima(maps, region)
    assert inside.tolist() == pytest.approx([5.0, 5.0, 5.0, 0.5]) and outside.tolist() == pytest.approx([1, 6, 5, 0.7])
    # Eq. 2: mean over S_noisy minus mean over S
    assert stomach_objective(maps, region).tolist() == pytest.approx([1 - 5, 8 / 3 - 5, 7 / 3 - 5, 1 / 3 - 0.5])
    # a region covering every cell can never move
    assert not explanation_moved(maps, torch.ones_like(region)).any()


def test_best_match_region_and_its_pixel_footprint():
    d = torch.full((1, 4, 4), 3.0)
    d[0, 1, 2] = 0.0  # the best match: one sharp cell
    region = best_match_region(d, 64)
    assert region[0, 1, 2] and 1 <= int(region.sum()) <= 4  # the 95th-percentile box stays near it
    cells = torch.zeros(1, 2, 2, dtype=torch.bool)
    cells[0, 0, 1] = True
    mask = region_pixel_mask(cells, 32)
    assert mask.shape == (1, 1, 32, 32)
    assert mask[0, 0, :16, 16:].eq(1).all() and mask.sum() == 16 * 16


def test_figure_boxes_are_cell_footprints():
    cells = torch.zeros(4, 4, dtype=torch.bool)
    cells[1, 2] = cells[2, 3] = True  # bounding rectangle: rows 1-2, columns 2-3
    assert region_box(cells, 32) == [16, 8, 32, 24]
    d = torch.full((4, 4), 2.0)
    d[3, 0] = 0.5
    assert best_cell_box(d, 30) == [0, 22, 8, 30]  # edges round(i * 30 / 4) = 0, 8, 15, 22, 30


def test_random_starts_per_image_do_not_depend_on_the_batch():
    clean = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(clean[:, :1])
    mask[1, :, :4] = 0
    together = random_start(clean, mask, EPS, [attempt_generator(0, k, 0) for k in (5, 6, 7)])
    alone = random_start(clean[1:2], mask[1:2], EPS, [attempt_generator(0, 6, 0)])
    assert torch.equal(together[1:2], alone)
    assert (together - clean).abs().max() <= EPS + 1e-6 and ((together - clean) * (1 - mask)).abs().max() == 0
    assert not torch.equal(together[0], together[2])


def test_transfer_rates_by_hand():
    t = torch.tensor([True, True, False, False])
    s = torch.tensor([True, False, True, False])
    e = transfer_entry(t, torch.tensor([False, False, False, True]), s, torch.zeros(4, dtype=torch.bool))
    assert e == {"attacked": 4, "teacher_moved": 2, "student_moved_with_teacher": 1, "transfer_rate": 0.5,
                 "student_moved": 0.5, "student_moved_random": 0.0, "teacher_moved_random": 0.25}
    never = torch.zeros(4, dtype=torch.bool)
    none = transfer_entry(never, never, s, s)  # the teacher never moved
    assert none["teacher_moved"] == 0 and none["transfer_rate"] is None


def test_jpeg_helpers_are_deterministic():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(3, 3, 24, 24, generator=g) * 255).to(torch.uint8)
    a, b = jpeg_compress(images, 20), jpeg_compress(images, 20)
    assert a.dtype == torch.uint8 and a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, images)
    assert torch.equal(jpeg_compress(images[0], 20), a[0])


def test_jpeg_statistics_by_hand():
    rng = np.random.default_rng(0)
    sims = rng.random((5, 8))
    loc = rng.integers(0, 4, (5, 8))
    same = jpeg_statistics(sims, sims, loc, loc, 3)
    assert np.allclose(same["rho"], 1) and not same["topk_changed"].any() and np.allclose(same["topk_overlap"], 1)
    flipped = jpeg_statistics(sims, -sims, loc, loc, 3)
    assert np.allclose(flipped["rho"], -1) and flipped["topk_changed"].all() and flipped["top1_changed"].all()
    other = rng.random((5, 8))
    rho = spearman_rows(sims, other)
    assert np.allclose(rho, [spearmanr(sims[i], other[i]).statistic for i in range(5)])


def test_fgsm_examples_stay_in_the_normalised_eps_ball():
    torch.manual_seed(0)
    model = ProtoPNet(ProtoPNetConfig("resnet18", num_classes=3, prototypes_per_class=2, prototype_depth=8,
                                      feature_stride=16))
    rt = make_runtime("cpu", "fp32", channels_last=False)
    pixels = torch.rand(4, 3, 32, 32)
    x = normalize_pixels(pixels)
    adv = fgsm_examples(model, x, torch.tensor([0, 1, 2, 0]), rt, eps=EPS, step=10 / 255)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    back = adv * std + mean  # pixel space
    assert (back - pixels).abs().max() <= EPS + 1e-5
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    assert (back - pixels).abs().max() > EPS / 2  # it did perturb


# ----------------------------------------------------------------------------- on a trained tiny run


@pytest.fixture(scope="module")
def workdir(shared_teacher, tmp_path_factory):
    """The tiny trained run `t` (a copy of the session's teacher) and an identical copy `t2` (a 'student'
    that is the teacher)."""
    return teacher_workdir(shared_teacher, tmp_path_factory.mktemp("robustness"), "t", "t2")


def test_attacked_images_stay_in_the_eps_ball_and_success_is_recomputable(workdir):
    rt = make_runtime("cpu", "fp32", channels_last=False)
    subject = load_run("t", workdir).to(rt.device, channels_last=rt.channels_last, frozen=True)
    cfg = with_overrides(subject.config)
    index = load_dataset_index(cfg)
    ds = raw_test_set(index, subject.image_size, subject.crop_bbox)
    clean = to_pixels(torch.stack([ds[i][0] for i in range(len(ds))]))
    for region in ("target", "image"):
        settings = AttackSettings(iters=4, top_k=2, region=region)
        batch = head_on_stomach(subject.model, clean, rt, settings)
        delta = batch.adv - clean
        assert delta.abs().max() <= EPS + 1e-6, "left the eps ball"
        assert batch.adv.min() >= 0 and batch.adv.max() <= 1
        assert (delta * (1 - batch.mask)).abs().max() == 0, "perturbed outside the allowed pixels"
        if region == "target":  # the original best match's own pixels stay untouched
            s_pixels = region_pixel_mask(batch.region, clean.shape[-1])
            assert (delta * s_pixels).abs().max() == 0
        # success is exactly the paper's criterion, recomputed from scratch on the perturbed images
        with torch.no_grad():
            out = forward_pixels(subject.model, batch.adv, rt)
        sims = torch.log((out.distances + 1) / (out.distances + 1e-4))[torch.arange(len(clean)), batch.prototype]
        assert torch.equal(explanation_moved(sims, batch.region), batch.success)
        assert torch.equal(batch.success, batch.sim_new > batch.sim_inside_adv)
        assert (batch.attempts[batch.success] == batch.rank[batch.success] + 1).all()


def test_cli_head_on_stomach_and_transfer(workdir, capsys):
    out_json = workdir / "hos.json"
    code, out, err = run_cli(["robustness", "--teacher", "t", "--model", "t2", "--workdir", str(workdir),
                              "--attack", "head-on-stomach", "--eps", "8/255", "--step", "2/255", "--iters", "8",
                              "--top-k", "2", "--images", "5", "--adv-iters", "2", "--device", "cpu",
                              "--json", str(out_json)], capsys)
    assert code == 0, err
    assert "head on stomach" in out and "transfer" in out
    report = json.loads(out_json.read_text())
    t = report["models"]["t"]
    assert 1 <= t["attacked"] <= 5 and t["linf"] <= EPS + 1e-6
    assert t["success_rate"] == sum(r["success"] for r in t["images"]) / t["attacked"]
    for r in t["images"]:
        assert r["success"] == (r["sim_new"] > r["sim_inside_adv"])
        assert r["shift"] == pytest.approx(r["sim_new"] - r["sim_clean"])
    assert 0 <= t["clean_acc"] <= 1 and 0 <= t["adv_acc"] <= 1
    # the 'student' is the teacher's copy: it moves exactly when the teacher does
    tr = t["transfer"]["t2"]
    assert tr["attacked"] == t["attacked"] and 0 <= tr["teacher_moved"] <= tr["attacked"]
    assert tr["student_moved_with_teacher"] == tr["teacher_moved"] and tr["transfer_rate"] in (None, 1.0)
    assert tr["student_moved"] == tr["teacher_moved"] / tr["attacked"]
    assert tr["student_moved_random"] == tr["teacher_moved_random"]
    for path in report["figures"]:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # one-line errors
    code, _, err = run_cli(["robustness", "--model", "t", "--workdir", str(workdir), "--eps", "8/0"], capsys)
    assert code == 2 and "--eps" in err and "Traceback" not in err
    code, _, err = run_cli(["robustness", "--model", "t", "--workdir", str(workdir), "--attack", "jpg"], capsys)
    assert code == 2 and "did you mean 'jpeg'" in err


def test_cli_jpeg_numbers_are_identical_across_runs(workdir, capsys):
    reports = []
    for i in range(2):
        path = workdir / f"jpeg{i}.json"
        code, out, err = run_cli(["robustness", "--model", "t", "--workdir", str(workdir), "--attack", "jpeg",
                                  "--quality", "20", "--top-k", "2", "--device", "cpu", "--seed", "3",
                                  "--out", str(workdir / f"fig{i}"), "--json", str(path)], capsys)
        assert code == 0, err
        report = json.loads(path.read_text())
        assert (workdir / f"fig{i}" / "jpeg-t.png").is_file()
        for entry in report["models"].values():
            entry.pop("seconds")
        report.pop("seconds")
        report.pop("figures")
        reports.append(report)
    assert reports[0] == reports[1]
    e = reports[0]["models"]["t"]
    assert e["images"] == 9 and -1 <= e["rho_mean"] <= 1 and 0 <= e["topk_changed"] <= 1


def test_training_remedies_run_and_fgsm_is_applied(workdir, capsys, monkeypatch):
    from p2p_cli.attacks import fgsm

    calls = []
    real = fgsm.fgsm_examples

    def spy(model, images, labels, rt, *, eps, step):
        calls.append((eps, step))
        adv = real(model, images, labels, rt, eps=eps, step=step)
        assert not torch.equal(adv, images)
        return adv

    monkeypatch.setattr(fgsm, "fgsm_examples", spy)
    code, _, err = run_cli(["train-teacher", "--config", str(workdir / "tiny.yaml"), "--workdir", str(workdir),
                            "--name", "robust", "--device", "cpu", "--epochs", "1", "--last-layer-epochs", "1",
                            "--adversarial", "fgsm", "--adv-eps", "8/255", "--augment-jpeg", "0.5", "-q"], capsys)
    assert code == 0, err
    assert calls and all(c == pytest.approx((8 / 255, 10 / 255)) for c in calls)
    saved = (workdir / "robust" / "config.yaml").read_text()
    assert "adversarial: fgsm" in saved and "augment_jpeg: 0.5" in saved
