"""``check_dataset``: reports problems as rows instead of raising."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from p2p_cli.data.check import CheckRow, check_dataset
from p2p_cli.data.synthetic import synthesize
from p2p_cli.errors import P2PError


def make_cub(root: Path) -> Path:
    """Classes A and B with 2 train + 1 test distinct images each; class C listed but empty."""
    rows: dict[str, list[str]] = {"images": [], "labels": [], "split": [], "boxes": []}
    for image_id in range(1, 7):
        cls = "001.A" if image_id <= 3 else "002.B"
        rel = f"{cls}/{image_id}.png"
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 20), (image_id * 30, 50, 90)).save(root / "images" / rel)
        rows["images"].append(f"{image_id} {rel}")
        rows["labels"].append(f"{image_id} {1 if image_id <= 3 else 2}")
        rows["split"].append(f"{image_id} {0 if image_id in (3, 6) else 1}")
        rows["boxes"].append(f"{image_id} 2 2 10 10")
    for name, lines in (("images.txt", rows["images"]), ("image_class_labels.txt", rows["labels"]),
                        ("train_test_split.txt", rows["split"]), ("bounding_boxes.txt", rows["boxes"])):
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n")
    return root


def by_check(rows: list[CheckRow]) -> dict[str, CheckRow]:
    assert all(r.status in ("ok", "warn", "error") for r in rows)
    assert all("\n" not in r.detail for r in rows)
    return {r.check: r for r in rows}


def test_healthy_dataset_is_all_ok(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "syn", num_classes=3, train_per_class=2, test_per_class=1, image_size=48)
    rows = by_check(check_dataset("synthetic", root))
    assert {r.status for r in rows.values()} == {"ok"}, rows
    assert {"layout", "classes", "images", "unreadable images", "train/test leakage", "image sizes",
            "bounding boxes", "parts"} <= rows.keys()
    assert rows["classes"].detail == "3 classes"
    assert "train 6, test 3" in rows["images"].detail


def test_finds_corrupt_image_empty_class_and_leakage(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    clean = by_check(check_dataset("cub", root))
    assert clean["unreadable images"].status == clean["train/test leakage"].status == "ok"
    assert clean["empty classes"].status == "ok"

    corrupt = root / "images/001.A/2.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])  # truncated PNG
    leaked_test, leaked_train = root / "images/002.B/6.png", root / "images/002.B/4.png"
    leaked_test.write_bytes(leaked_train.read_bytes())
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n3 003.C\n")
    seen: list[tuple[int, int]] = []
    rows = by_check(check_dataset("cub", root, progress=lambda d, t: seen.append((d, t))))

    assert rows["unreadable images"].status == "error"
    assert "1 of 6" in rows["unreadable images"].detail and str(corrupt) in rows["unreadable images"].detail
    assert rows["empty classes"].status == "error" and "'C'" in rows["empty classes"].detail
    assert rows["train/test leakage"].status == "warn"
    assert str(leaked_test) in rows["train/test leakage"].detail
    assert str(leaked_train) in rows["train/test leakage"].detail
    assert seen[-1] == (6, 6)


def test_missing_files_and_class_without_test_images(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    (root / "images/001.A/1.png").unlink()
    (root / "train_test_split.txt").write_text("1 1\n2 1\n3 1\n4 1\n5 1\n6 0\n")
    rows = by_check(check_dataset("cub", root))
    assert rows["files"].status == "error" and "001.A/1.png" in rows["files"].detail
    assert rows["empty classes"].status == "warn" and "no test images" in rows["empty classes"].detail
    assert "train 5, test 1" in rows["images"].detail


def test_duplicates_within_a_split_and_bad_boxes(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    (root / "images/001.A/2.png").write_bytes((root / "images/001.A/1.png").read_bytes())
    (root / "bounding_boxes.txt").write_text("1 2 2 10 10\n2 2 2 10 10\n3 2 2 10 10\n4 2 2 10 10\n"
                                             "5 2 2 10 10\n6 10 10 50 50\n")
    rows = by_check(check_dataset("cub", root))
    assert rows["duplicates"].status == "warn" and "1 redundant" in rows["duplicates"].detail
    assert rows["bounding boxes"].status == "warn" and "6.png" in rows["bounding boxes"].detail


def test_broken_layout_is_reported_not_raised(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    (root / "images.txt").unlink()
    rows = check_dataset("cub", root)
    assert len(rows) == 1 and rows[0].check == "layout" and rows[0].status == "error"
    assert str(root / "images.txt") in rows[0].detail

    (root / "images.txt").write_text("1 001.A/1.png\nrubbish\n")
    rows = check_dataset("cub", root)
    assert rows[0].status == "error" and f"{root / 'images.txt'}:2" in rows[0].detail


def test_missing_root_and_unknown_kind_raise(tmp_path: Path) -> None:
    with pytest.raises(P2PError, match="data root not found"):
        check_dataset("cub", tmp_path / "absent")
    with pytest.raises(P2PError, match="did you mean 'folder'"):
        check_dataset("folders", tmp_path)


def test_folder_without_a_split_says_how_it_was_split(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for k in range(5):
            (tmp_path / "f" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (40 * k, 10 if cls == "a" else 200, 0)).save(tmp_path / "f" / cls / f"{k}.png")
    rows = by_check(check_dataset("folder", tmp_path / "f"))
    assert rows["split"].status == "warn" and "every 5th image" in rows["split"].detail
    assert "train 8, test 2" in rows["images"].detail
    assert "error" not in {r.status for r in rows.values()}, rows
