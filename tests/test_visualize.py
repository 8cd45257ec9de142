"""`p2p visualize`, the explanation engine and the viz package.

The session's tiny teacher (trained with the real CLI) is copied into the module's workdir; a
second copy plays the second model (identical weights: the matched gallery must then pair every prototype with itself).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from p2p_cli.errors import P2PError
from p2p_cli.explain.images import read_image
from p2p_cli.io.checkpoint import save_tensors
from p2p_cli.models.factory import load_model
from p2p_cli.models.protopnet import log_similarity
from p2p_cli.viz import figures, html, render
from p2p_cli.workflows.visualize import default_model_runs
from tests.conftest import run_cli, teacher_workdir


@pytest.fixture(scope="module")
def workdir(shared_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`teacher` (the session's tiny teacher, trained by the real CLI) and `baseline` (a copy of it)."""
    return teacher_workdir(shared_teacher, tmp_path_factory.mktemp("viz"), "teacher", "baseline")


def _test_images(work: Path) -> list[Path]:
    from p2p_cli.data.loaders import load_dataset_index
    from p2p_cli.io.config import config_from_dict

    cfg = config_from_dict(yaml.safe_load((work / "teacher" / "config.yaml").read_text()), source="test")
    return [Path(s.path) for s in load_dataset_index(cfg).test]


# ----------------------------------------------------------------------------- images


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_read_image_accepts_any_mode_and_orientation(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    gray = read_image(_save(rgb.convert("L"), tmp_path / "g.png"))
    assert gray.mode == "RGB" and gray.size == (50, 30)
    deep = Image.fromarray(np.arange(30 * 50, dtype=np.uint16).reshape(30, 50) * 40)
    assert deep.mode.startswith("I")
    out = np.asarray(read_image(_save(deep, tmp_path / "d.png")))
    assert out.dtype == np.uint8 and out.max() > 200  # scaled from 16 bits, not clipped to white/black
    rgba = np.zeros((30, 50, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :25, 3] = 255  # right half fully transparent
    comp = np.asarray(read_image(_save(Image.fromarray(rgba), tmp_path / "a.png")))
    assert (comp[:, 30:] == 255).all() and (comp[:, :20, 0] == 200).all()
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotate 90° when shown
    rotated = read_image(_save(rgb, tmp_path / "r.jpg", exif=exif))
    assert rotated.size == (30, 50)
    assert read_image(_save(rgb.convert("CMYK"), tmp_path / "c.jpg")).mode == "RGB"


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_read_image_rejects_unreadable_files_with_one_line(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(P2PError) as err:
        read_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(P2PError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(P2PError, match="not a file"):
        read_image(tmp_path)


# ----------------------------------------------------------------------------- viz (pure)


def test_overlay_is_a_fixed_alpha_blend_of_the_colormap():
    img = np.full((8, 10, 3), 100, dtype=np.uint8)
    values = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (8, 1))
    out = render.overlay_heatmap(img, values * 7 + 3, alpha=0.5)  # normalised per map: the scale is irrelevant
    cmap = render.colorize(values)
    expected = np.clip(0.5 * 100 + 0.5 * cmap.astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    assert not np.array_equal(cmap[:, 0], cmap[:, -1])  # low and high similarity look different
    with pytest.raises(ValueError):
        render.overlay_heatmap(img, values[:4])


def test_draw_box_and_crop_stay_inside_the_image():
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    boxed = render.draw_box(img, (5, 4, 15, 12), (255, 0, 0), width=1)
    assert (boxed[4, 5:15] == (255, 0, 0)).all() and (boxed[11, 5:15] == (255, 0, 0)).all()
    assert boxed[8, 10].tolist() == [0, 0, 0]
    edge = render.draw_box(img, (-10, -10, 100, 100), width=2, label="top")
    assert edge.shape == img.shape
    assert render.crop(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3), (5, 4, 15, 12)).shape == (8, 10, 3)
    assert render.crop(img, (40, 40, 50, 50)).shape[:2] == (1, 1)


def test_panel_figure_size_and_html_page_are_self_contained():
    tile = np.full((112, 112, 3), 128, dtype=np.uint8)
    cell = figures.Cell(tile, tile[:40, :60], "#1  prototype 3", "of class Black footed Albatross",
                        [("similarity", "1.234")], note="a note")
    cols = [figures.Column("a (resnet18)", [cell, cell], ["predicts x"], tile),
            figures.Column("b (resnet34)", [cell], ["predicts y"], tile)]
    png = figures.panel_figure(cols, title="t", left_label="l", right_label="r", subtitle="s")
    with Image.open(io.BytesIO(png)) as im:
        expected_w = (2 * (2 * figures.CELL_IN + figures.TEXT_IN) + figures.GAP_IN + 0.4) * figures.DPI
        assert abs(im.size[0] - expected_w) <= 2
        # screen resolution; an image cell shows a 112-px synthetic image without shrinking it
        assert figures.DPI <= 110 and figures.CELL_IN * figures.DPI >= 112
    page = html.Page("title <x>", meta="m & n")
    page.image(html.Image(png, "fig", caption="cap"))
    page.table(html.Table(["a", "b"], [[1, "<b>"], [0.5, html.Image(render.png_bytes(tile), "t", width=20)]]))
    text = page.render()
    assert "&lt;x&gt;" in text and "&lt;b&gt;" in text and "m &amp; n" in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in text and "http" not in text


def test_figures_and_thumbnails_are_compact_and_embedded_with_their_type():
    """A photo-like 3-model top-5 figure stays far under 1 MB (256-colour PNG) with its text intact;
    thumbnails are JPEG, embedded as image/jpeg."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)  # noise: the worst case for any codec
    cell = figures.Cell(photo, photo, "#1  prototype 3", "of class x", [("similarity", "1.234")])
    cols = [figures.Column(f"m{i}", [cell] * 5, ["predicts x"], photo) for i in range(3)]
    png = figures.panel_figure(cols, title="t", left_label="l", right_label="r")
    assert len(png) < 1_000_000
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "P" and len(im.getcolors(256) or []) <= 256
    jpeg = render.jpeg_bytes(photo, long_side=56)
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and im.size == (56, 56)
    assert html.data_uri(jpeg).startswith("data:image/jpeg;base64,")
    assert html.data_uri(png).startswith("data:image/png;base64,")


# ----------------------------------------------------------------------------- default models


def _fake_run(work: Path, name: str, meta: dict) -> None:
    run = work / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("dataset: synthetic\n")
    save_tensors(run / "model.safetensors", {"x": torch.zeros(1)}, {"format": "p2p-model", "arch": "protopnet",
                                                                      **meta})


def test_default_models(tmp_path):
    _fake_run(tmp_path, "big", {})
    _fake_run(tmp_path, "s1", {"teacher": {"name": "big", "path": str(tmp_path / "big")}, "method": "proto2proto"})
    _fake_run(tmp_path, "s0", {"teacher": {"name": "big", "path": "/elsewhere/big"}, "method": "none"})
    _fake_run(tmp_path, "orphan", {"teacher": {"name": "gone", "path": "/nowhere"}, "method": "kd"})
    assert [r.name for r in default_model_runs(tmp_path)] == ["big", "s0", "s1"]
    for name in ("proto2proto", "teacher"):
        _fake_run(tmp_path, name, {})
    assert [r.name for r in default_model_runs(tmp_path)] == ["teacher", "proto2proto"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _fake_run(empty, "a", {})
    _fake_run(empty, "b", {})
    with pytest.raises(P2PError, match="pass --model"):
        default_model_runs(empty)


# ----------------------------------------------------------------------------- the command


def test_visualize_writes_figure_html_and_correct_numbers(workdir, tmp_path, capsys):
    image = _test_images(workdir)[1]
    out, report = tmp_path / "out", tmp_path / "viz.json"
    code, stdout, err = run_cli(["visualize", "--image", str(image), "--workdir", str(workdir), "--out", str(out),
                                 "--show-parts", "--prototypes", "--json", str(report), "--device", "cpu",
                                 "--precision", "fp32"], capsys)
    assert code == 0, err
    for name in ("explanation.png", "gallery.png", "index.html"):
        assert (out / name).is_file() and f"{out / name}" in stdout
    summary = json.loads(report.read_text())
    assert [m["name"] for m in summary["models"]] == ["teacher", "baseline"]  # the workdir's defaults
    # the numbers are the model's: recompute the explanation of the teacher independently
    model, meta = load_model(workdir / "teacher" / "model.safetensors")
    from p2p_cli.data.images import load_image
    from p2p_cli.data.index import Sample
    from p2p_cli.data.transforms import normalize

    with torch.no_grad():
        out_t = model(normalize(load_image(Sample(image, 0), 32))[None])
        sims = log_similarity(out_t.min_distances[0])
        pred = int(out_t.logits[0].argmax())
        contrib = sims * model.last_layer.weight[pred]
    teacher = summary["models"][0]
    assert teacher["predicted"] == meta["class_names"][pred]
    top = teacher["top_k"]
    assert len(top) == 5
    assert [t["prototype"] for t in top] == torch.argsort(contrib, descending=True)[:5].tolist()
    for t in top:
        assert t["contribution"] == pytest.approx(t["similarity"] * t["weight"], rel=1e-5)
        assert t["contribution"] == pytest.approx(float(contrib[t["prototype"]]), rel=1e-4, abs=1e-5)
        assert t["source"]["path"]  # a patch from prototypes.json
    assert [t["contribution"] for t in top] == sorted((t["contribution"] for t in top), reverse=True)
    # gallery: identical models match every prototype with itself at PMS 1
    gallery = summary["gallery"]
    assert gallery["teacher"] == "teacher" and gallery["students"][0]["pms"] == pytest.approx(1.0)
    assert all(p["teacher"] == p["student"] and p["cooccurrence"] == gallery["n_images"]
               for p in gallery["students"][0]["pairs"])
    page = (out / "index.html").read_text()
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
               for s in re.findall(r'src="([^"]*)"', page))
    assert meta["class_names"][pred].replace("_", " ") in page  # class names shown
    with Image.open(out / "explanation.png") as im:
        assert im.size[0] > 2 * 2 * figures.CELL_IN * figures.DPI  # two model columns


def test_gallery_reuses_the_activation_cache(workdir, tmp_path, capsys, monkeypatch):
    """The gallery's test-set argmins come from (and go to) evaluate's activation cache."""
    import p2p_cli.evaluation.collect as ev

    image = _test_images(workdir)[0]
    args = ["visualize", "--image", str(image), "--workdir", str(workdir), "--prototypes", "--device", "cpu",
            "--precision", "fp32", "-q"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")], capsys)
    assert code == 0, err
    assert list((workdir / ".cache" / "activations").glob("*-test-*-base.safetensors"))

    def no_forward(*a, **k):
        raise AssertionError("the cached activations should have been used")

    monkeypatch.setattr(ev, "compute_activations", no_forward)
    code, _, err = run_cli([*args, "--out", str(tmp_path / "b"), "--json", str(tmp_path / "b.json")], capsys)
    assert code == 0, err
    first, second = (json.loads((tmp_path / f"{n}.json").read_text())["gallery"] for n in "ab")
    assert first == second
    # and evaluate reads the arrays the gallery stored: no forward pass either
    code, _, err = run_cli(["evaluate", "--model", "baseline", "--teacher", "teacher", "--workdir", str(workdir),
                            "--metrics", "acc", "pms", "--device", "cpu", "--precision", "fp32", "-q"], capsys)
    assert code == 0, err


def test_visualize_an_unseen_odd_image_and_a_chosen_class(workdir, tmp_path, capsys):
    source = Image.open(_test_images(workdir)[0]).convert("RGBA").resize((90, 40))
    odd = tmp_path / "odd.png"
    source.save(odd)
    classes = load_model(workdir / "teacher" / "model.safetensors")[1]["class_names"]
    report = tmp_path / "odd.json"
    code, _, err = run_cli(["visualize", "--image", str(odd), "--model", "teacher", "--workdir", str(workdir),
                            "--out", str(tmp_path / "o"), "--class", classes[2].replace("_", " "), "--top-k", "2",
                            "--json", str(report), "--device", "cpu"], capsys)
    assert code == 0, err
    summary = json.loads(report.read_text())
    assert summary["models"][0]["explained"] == classes[2] and len(summary["models"][0]["top_k"]) == 2
    assert "true_class" not in summary
    box = summary["models"][0]["top_k"][0]["activation_box"]  # in the original image's pixels
    assert 0 <= box[0] < box[2] <= 90 and 0 <= box[1] < box[3] <= 40
    code, _, err = run_cli(["visualize", "--image", str(odd), "--model", "teacher", "--workdir", str(workdir),
                            "--class", classes[2][:-2], "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown class" in err and "did you mean" in err and "Traceback" not in err
    code, _, err = run_cli(["visualize", "--image", str(odd), "--model", "teacher", "--workdir", str(workdir),
                            "--show-parts", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not an image of the dataset" in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a broken")
    code, _, err = run_cli(["visualize", "--image", str(bad), "--model", "teacher", "--workdir", str(workdir)],
                           capsys)
    assert code == 2 and "cannot read image" in err and len(err.strip().splitlines()) == 1
