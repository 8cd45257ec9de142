"""`p2p data prepare`: CUB / Stanford Cars → OUT/train/<class>/*.jpg, OUT/test/<class>/*.jpg."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from p2p_cli.data import prepare
from p2p_cli.data.check import check_dataset
from p2p_cli.data.prepare import class_folder, prepare_dataset
from p2p_cli.data.readers import load_index
from p2p_cli.errors import P2PError
from tests.conftest import run_cli
from tests.test_data_datasets import make_cars, make_cub


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_cub_split_by_the_official_file(tmp_path):
    src = make_cub(tmp_path / "CUB_200_2011")
    result = prepare_dataset("cub", src, tmp_path / "out")
    assert (result.classes, result.train, result.test) == (2, 4, 2)
    assert files(tmp_path / "out") == [
        "prepare.json",
        "test/001.Black_footed_Albatross/Black_footed_Albatross_0002.jpg",
        "test/002.Laysan_Albatross/Laysan_Albatross_0002.jpg",
        "train/001.Black_footed_Albatross/Black_footed_Albatross_0000.jpg",
        "train/001.Black_footed_Albatross/Black_footed_Albatross_0001.jpg",
        "train/002.Laysan_Albatross/Laysan_Albatross_0000.jpg",
        "train/002.Laysan_Albatross/Laysan_Albatross_0001.jpg",
    ]
    # without --crop the files are byte-identical copies
    rel = "001.Black_footed_Albatross/Black_footed_Albatross_0000.jpg"
    assert (tmp_path / "out" / "train" / rel).read_bytes() == (src / "images" / rel).read_bytes()
    rows = check_dataset("folder", tmp_path / "out")
    assert not [r for r in rows if r.status == "error"], rows
    index = load_index("folder", tmp_path / "out")
    assert index.classes == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    assert len(index.train) == 4 and len(index.test) == 2
    record = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert record["kind"] == "cub" and record["crop"] is False and record["train"] == 4


def test_cub_crop_to_the_boxes(tmp_path):
    src = make_cub(tmp_path / "CUB_200_2011")  # every box: x 5, y 4, w 20, h 16 in a 40x30 image
    prepare_dataset("cub", src, tmp_path / "out", crop=True)
    crops = list((tmp_path / "out").rglob("*.jpg"))
    assert len(crops) == 6
    for path in crops:
        with Image.open(path) as im:
            assert im.size == (20, 16) and im.format == "JPEG"
    original = Image.open(src / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0001.jpg").convert("RGB")
    crop = Image.open(tmp_path / "out" / "train" / "002.Laysan_Albatross" / "Laysan_Albatross_0001.jpg")
    a, b = original.getpixel((15, 12)), crop.convert("RGB").getpixel((10, 8))
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 6  # same pixel, JPEG q95 re-encoded


def test_cars_with_crop(tmp_path, capsys):
    src = make_cars(tmp_path / "cars")  # train boxes (3, 2)-(30, 20) 1-based inclusive → 28 x 19 pixels
    code, out, err = run_cli(["data", "prepare", "cars", str(src), "--out", str(tmp_path / "out"), "--crop", "-q"],
                             capsys)
    assert code == 0, err
    assert "2 classes, 4 train + 2 test images (cropped to bounding boxes)" in out
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == [
        "001.AM General Hummer SUV 2000", "002.Acura RL Sedan 2012"]
    for path in (tmp_path / "out" / "train").rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.size == (28, 19)
    for path in (tmp_path / "out" / "test").rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.size == (40, 30)  # test boxes cover the whole image
    code, out, err = run_cli(["data", "check", "--dataset", "folder", "--data-root", str(tmp_path / "out")], capsys)
    assert code == 0, out + err


def test_refuses_a_non_empty_out_without_overwrite(tmp_path, capsys):
    src = make_cub(tmp_path / "CUB_200_2011")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["data", "prepare", "cub", str(src), "--out", str(out)], capsys)
    assert code == 2 and "exists and is not empty; pass --overwrite" in err and "Traceback" not in err
    assert files(out) == ["keep.txt"]
    prepare_dataset("cub", src, out, overwrite=True)
    assert "keep.txt" not in files(out) and len(files(out)) == 7
    prepare_dataset("cub", src, tmp_path / "empty_ok")  # a missing or empty folder needs no flag
    (tmp_path / "empty").mkdir()
    prepare_dataset("cub", src, tmp_path / "empty")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch):
    src = make_cub(tmp_path / "CUB_200_2011")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old dataset")
    calls = []
    real = prepare._write_sample

    def failing(sample, dst, crop):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(sample, dst, crop)

    monkeypatch.setattr(prepare, "_write_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("cub", src, out, overwrite=True)
    assert files(out) == ["old.txt"]  # the old dataset is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CUB_200_2011", "out"]


def test_bad_requests(tmp_path):
    src = make_cub(tmp_path / "CUB_200_2011", boxes=False)
    with pytest.raises(P2PError, match="--crop needs bounding boxes"):
        prepare_dataset("cub", src, tmp_path / "out", crop=True)
    with pytest.raises(P2PError, match="must lie outside the dataset root"):
        prepare_dataset("cub", src, src / "prepared")
    with pytest.raises(P2PError, match="choose cub or cars"):
        prepare_dataset("folder", src, tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(P2PError, match="is not a folder"):
        prepare_dataset("cub", src, tmp_path / "file")
    assert not (tmp_path / "out").exists()


def test_class_folder_names():
    assert class_folder(0, "Black_footed_Albatross") == "001.Black_footed_Albatross"
    assert class_folder(41, "Ram C/V Cargo Van Minivan 2012") == "042.Ram C-V Cargo Van Minivan 2012"
