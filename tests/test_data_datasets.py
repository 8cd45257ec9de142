"""Dataset readers (CUB, Stanford Cars, folders), image loading, geometry and transforms."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from p2p_cli.data.images import (
    ImageDataset,
    file_sha256,
    image_dims,
    input_geometry,
    load_image,
    parts_in_input,
)
from p2p_cli.data.index import DataError, DatasetIndex, Sample, unwrap_worker_error
from p2p_cli.data.readers import KINDS, READERS, Reader, load_index
from p2p_cli.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    eval_transform,
)
from p2p_cli.errors import P2PError
from p2p_cli.io.config import DATASET_KINDS


def one_line_error(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def save_image(path: Path, size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (90, 120, 150),
               fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def make_cub(root: Path, *, parts: bool = True, boxes: bool = True) -> Path:
    """Two classes, 2 train + 1 test images each, 40x30 px, in the native CUB layout."""
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    lines = {"images": [], "labels": [], "split": [], "boxes": [], "locs": []}
    image_id = 0
    for c, cls in enumerate(classes):
        for k in range(3):
            image_id += 1
            rel = f"{cls}/{cls[4:]}_{k:04d}.jpg"
            save_image(root / "images" / rel, colour=(60 * c + 40, 100, 30 * k + 50))
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {int(k < 2)}")
            lines["boxes"].append(f"{image_id} 5.0 4.0 20.0 16.0")
            lines["locs"] += [f"{image_id} 1 10.0 8.0 1", f"{image_id} 2 0.0 0.0 0"]
    write = lambda rel, rows: (root / rel).write_text("\n".join(rows) + "\n")  # noqa: E731
    write("images.txt", lines["images"])
    write("image_class_labels.txt", lines["labels"])
    write("train_test_split.txt", lines["split"])
    write("classes.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)])
    if boxes:
        write("bounding_boxes.txt", lines["boxes"])
    if parts:
        (root / "parts").mkdir()
        write("parts/parts.txt", ["1 back", "2 left eye"])
        write("parts/part_locs.txt", lines["locs"])
    return root


def cars_annotations(rows: list[tuple[int, int, int, int, int, str]]) -> np.ndarray:
    dtype = [(f, object) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    ann = np.empty((1, len(rows)), dtype=dtype)
    for i, (x1, y1, x2, y2, cls, fname) in enumerate(rows):
        ann[0, i] = (np.array([[x1]], np.uint16), np.array([[y1]], np.uint16), np.array([[x2]], np.uint16),
                     np.array([[y2]], np.uint16), np.array([[cls]], np.uint8), np.array([fname]))
    return ann


def make_cars(root: Path, *, devkit: bool = True, test_labels: bool = True) -> Path:
    """Stanford Cars: 2 classes, 4 train and 2 test images, with the devkit .mat files."""
    kit = root / "devkit" if devkit else root
    kit.mkdir(parents=True, exist_ok=True)
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Acura RL Sedan 2012"
    scipy.io.savemat(kit / "cars_meta.mat", {"class_names": names})
    train = [(3, 2, 30, 20, 1 + i % 2, f"{i + 1:05d}.jpg") for i in range(4)]
    test = [(1, 1, 40, 30, 1 + i % 2, f"{i + 1:05d}.jpg") for i in range(2)]
    for split, rows in (("train", train), ("test", test)):
        for row in rows:
            save_image(root / f"cars_{split}" / row[5])
    scipy.io.savemat(kit / "cars_train_annos.mat", {"annotations": cars_annotations(train)})
    name = "cars_test_annos_withlabels.mat" if test_labels else "cars_test_annos.mat"
    scipy.io.savemat(kit / name, {"annotations": cars_annotations(test)})
    return root


def make_folder(root: Path) -> Path:
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("cat", "dog"):
            for k in range(n):
                save_image(root / split / cls / f"{k}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


# ----------------------------------------------------------------------------- CUB


def test_cub_reader(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "CUB_200_2011")
    index = load_index("cub", root)
    assert index.classes == ["Black_footed_Albatross", "Laysan_Albatross"]
    assert (len(index.train), len(index.test)) == (4, 2)
    assert [s.label for s in index.train] == [0, 0, 1, 1]
    assert index.train[0].path == root / "images/001.Black_footed_Albatross/Black_footed_Albatross_0000.jpg"
    assert index.train[0].bbox == (5.0, 4.0, 20.0, 16.0)
    assert index.part_names == ["back", "left eye"]
    assert index.train[0].parts == ((10.0, 8.0, True), (0.0, 0.0, False))
    # the parent folder holding CUB_200_2011/ is accepted too
    assert load_index("cub", tmp_path).root == root


def test_cub_without_optional_files(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub", parts=False, boxes=False)
    (root / "classes.txt").unlink()
    index = load_index("cub", root)
    assert index.part_names is None and index.train[0].parts is None and index.train[0].bbox is None
    assert index.classes == ["Black_footed_Albatross", "Laysan_Albatross"]  # from the folders


def test_cub_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    path = root / "image_class_labels.txt"
    path.write_text(path.read_text().replace("2 1\n", "2\n"))
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, f"{path}:2", "expected '<image_id> <class_id>'")

    path.write_text(path.read_text().replace("2\n", "2 one\n"))
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, f"{path}:2", "'one'")


@pytest.mark.parametrize("missing", ["images.txt", "train_test_split.txt", "image_class_labels.txt"])
def test_cub_missing_index_file(tmp_path: Path, missing: str) -> None:
    root = make_cub(tmp_path / "cub")
    (root / missing).unlink()
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, str(root / missing), "file not found", "CUB-200-2011")


def test_cub_missing_image_and_empty_class(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    lost = root / "images/002.Laysan_Albatross/Laysan_Albatross_0001.jpg"
    lost.unlink()
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, str(lost), "not found")

    root = make_cub(tmp_path / "cub2")
    (root / "classes.txt").write_text("1 001.A\n2 002.B\n3 003.Empty_Bird\n")
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, "Empty_Bird", "no images", "image_class_labels.txt")


def test_cub_inconsistent_ids(tmp_path: Path) -> None:
    root = make_cub(tmp_path / "cub")
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 7\n4 2\n5 2\n6 2\n")
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, "image_class_labels.txt:3", "class id 7")
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 1\n4 2\n5 2\n")
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, "image_class_labels.txt", "image id 6")
    root = make_cub(tmp_path / "cub2")
    locs = root / "parts" / "part_locs.txt"
    locs.write_text(locs.read_text() + "99 1 3.0 4.0 1\n")
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, f"{locs}:13", "image id 99")
    locs.write_text(locs.read_text().replace("99 1 3.0 4.0 1", "1 1 3.0 four 1"))
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, f"{locs}:13", "'four'")
    (root / "images.txt").write_text("1 a.jpg\n1 b.jpg\n")
    with pytest.raises(P2PError) as exc:
        load_index("cub", root)
    one_line_error(exc, "images.txt:2", "duplicate id 1")


# ----------------------------------------------------------------------------- Cars


@pytest.mark.parametrize("devkit", [True, False])
def test_cars_reader(tmp_path: Path, devkit: bool) -> None:
    root = make_cars(tmp_path / "cars", devkit=devkit)
    index = load_index("cars", root)
    assert index.classes == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert (len(index.train), len(index.test)) == (4, 2)
    assert [s.label for s in index.train] == [0, 1, 0, 1]
    first = index.train[0]
    assert first.path == root / "cars_train" / "00001.jpg"
    assert first.bbox == (2.0, 1.0, 28.0, 19.0)  # 1-based inclusive x1..x2 -> 0-based x, w
    assert index.part_names is None and first.parts is None


def test_cars_errors(tmp_path: Path) -> None:
    root = make_cars(tmp_path / "nolabels", test_labels=False)
    with pytest.raises(P2PError) as exc:
        load_index("cars", root)
    one_line_error(exc, "cars_test_annos_withlabels.mat", "has no labels")

    root = make_cars(tmp_path / "badclass")
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat",
                     {"annotations": cars_annotations([(1, 1, 5, 5, 9, "00001.jpg")])})
    with pytest.raises(P2PError) as exc:
        load_index("cars", root)
    one_line_error(exc, "cars_train_annos.mat", "class 9", "1..2")

    root = make_cars(tmp_path / "corrupt")
    (root / "devkit" / "cars_meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(P2PError) as exc:
        load_index("cars", root)
    one_line_error(exc, "cars_meta.mat", "cannot read MATLAB file")

    root = make_cars(tmp_path / "noimages")
    (root / "cars_test" / "00002.jpg").unlink()
    with pytest.raises(P2PError) as exc:
        load_index("cars", root)
    one_line_error(exc, str(root / "cars_test" / "00002.jpg"), "not found")

    root = make_cars(tmp_path / "wrongstruct")
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": np.zeros((1, 3))})
    with pytest.raises(P2PError) as exc:
        load_index("cars", root)
    one_line_error(exc, "cars_train_annos.mat", "lacks field(s)")


# ----------------------------------------------------------------------------- folders, kinds


def test_folder_reader(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "f")
    index = load_index("folder", root)
    assert index.classes == ["cat", "dog"]
    assert (len(index.train), len(index.test)) == (4, 2)
    assert all(s.path.suffix == ".png" for s in index.train)

    (root / "test" / "cow").mkdir()
    save_image(root / "test" / "cow" / "0.png")
    with pytest.raises(P2PError) as exc:
        load_index("folder", root)
    one_line_error(exc, str(root / "test" / "cow"), "not in")

    root = make_folder(tmp_path / "g")
    (root / "train" / "emu").mkdir()
    with pytest.raises(P2PError) as exc:
        load_index("folder", root)
    one_line_error(exc, str(root / "train" / "emu"), "no images")


def test_folder_without_a_split_holds_out_every_fifth_image(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    for cls, n in (("rose", 6), ("tulip", 10), ("daisy", 3)):
        for k in range(n):
            save_image(root / cls / f"{k:02d}.png", colour=(10 * k, 90, 150))
    (root / ".thumbs").mkdir()  # hidden: not a class
    index, issues = READERS["folder"].read(root)
    assert index.classes == ["daisy", "rose", "tulip"]
    test = sorted((index.classes[s.label], s.path.name) for s in index.test)
    assert test == [("rose", "04.png"), ("tulip", "04.png"), ("tulip", "09.png")]  # the 5th and 10th
    assert len(index.train) == 3 + 5 + 8
    assert not {s.path for s in index.train} & {s.path for s in index.test}
    checks = {(i.check, i.status) for i in issues}
    assert ("split", "warn") in checks and ("empty classes", "warn") in checks  # daisy: 3 images, none held out
    assert load_index("folder", root).test == index.test  # warnings do not stop loading

    (root / "train").mkdir()  # half a split is not "no split": the split layout's error
    with pytest.raises(P2PError) as exc:
        load_index("folder", root)
    one_line_error(exc, str(root / "test"), "folder not found", "without a split")


def test_kind_and_root_errors(tmp_path: Path) -> None:
    with pytest.raises(P2PError) as exc:
        load_index("cubb", tmp_path)
    one_line_error(exc, "did you mean 'cub'", "synthetic, cub, cars, folder")
    with pytest.raises(P2PError) as exc:
        load_index("cub", None)
    one_line_error(exc, "needs a data root")
    with pytest.raises(P2PError) as exc:
        load_index("folder", tmp_path / "nowhere")
    one_line_error(exc, str(tmp_path / "nowhere"), "not found")
    with pytest.raises(P2PError) as exc:
        load_index("folder", tmp_path)
    one_line_error(exc, str(tmp_path / "train"), "folder not found")


def test_readers_registry_dispatches_by_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert KINDS == ("synthetic", "cub", "cars", "folder") == tuple(READERS) == DATASET_KINDS
    seen: list[Path] = []

    def read(root: Path) -> tuple[DatasetIndex, list]:
        seen.append(root)
        return DatasetIndex("mine", root, ["a"], [Sample(root / "x.png", 0)], [Sample(root / "y.png", 0)]), []

    monkeypatch.setitem(READERS, "mine", Reader(read))
    index = load_index("mine", tmp_path)
    assert index.name == "mine" and seen == [tmp_path]
    with pytest.raises(P2PError) as exc:
        load_index("mine", None)
    one_line_error(exc, "dataset 'mine' needs a data root")


def test_missing_synthetic_root_hints_at_synthesize(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_index("synthetic", tmp_path / "nowhere")
    one_line_error(exc, str(tmp_path / "nowhere"), "data root not found", "p2p data synthesize")
    with pytest.raises(DataError) as exc:
        load_index("cub", tmp_path / "nowhere")
    assert "synthesize" not in one_line_error(exc, "data root not found")


# ----------------------------------------------------------------------------- images and geometry


def test_image_dataset_repeats_and_cache(tmp_path: Path) -> None:
    index = load_index("cub", make_cub(tmp_path / "cub"))
    ds = ImageDataset(index.train, eval_transform(16), image_size=16, repeats=3, cache=True)
    assert len(ds) == 12
    image, label, base = ds[6]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert (label, base) == (index.train[2].label, 2)
    with pytest.raises(IndexError):
        ds[12]
    first = ds.load(1)
    index.train[1].path.unlink()  # cached: no second decode
    assert torch.equal(ds.load(1), first)
    with pytest.raises(DataError) as exc:
        ImageDataset(index.train, None, image_size=16)[1]
    one_line_error(exc, str(index.train[1].path), "file not found")
    with pytest.raises(DataError):
        ImageDataset(index.train, None, image_size=16, cache=True).preload()


def test_preload_fills_the_cache(tmp_path: Path) -> None:
    index = load_index("cub", make_cub(tmp_path / "cub"))
    ds = ImageDataset(index.train, None, image_size=8, cache=True)
    ds.preload()
    for sample in index.train:
        sample.path.unlink()
    for i in range(len(ds)):  # every image comes from the cache: the files are gone
        assert ds[i][0].shape == (3, 8, 8) and ds[i][0].dtype == torch.uint8


def test_decoded_images_are_kept_on_disk_for_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from p2p_cli.data import images as images_module
    from p2p_cli.data.decoded import decoded_cache_path

    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    index = load_index("cub", make_cub(tmp_path / "cub"))
    first = ImageDataset(index.train, None, image_size=8, cache=True)
    first.preload(disk=True)
    path = decoded_cache_path(index.train, 8, False)
    assert path.is_file()
    decoded: list[Path] = []
    real = images_module.load_image
    monkeypatch.setattr(images_module, "load_image", lambda s, *a: decoded.append(s.path) or real(s, *a))
    second = ImageDataset(index.train, None, image_size=8, cache=True)
    second.preload(disk=True)
    assert decoded == []  # read back, nothing decoded
    assert all(torch.equal(second.load(i), first.load(i)) for i in range(len(index.train)))
    ImageDataset(index.train, None, image_size=16, cache=True).preload(disk=True)  # another size: decoded
    assert len(decoded) == len(index.train)
    decoded.clear()
    changed = index.train[1].path
    Image.new("RGB", (20, 10), (255, 0, 0)).save(changed)  # an edited image changes the key
    os.utime(changed, ns=(1, 1))
    third = ImageDataset(index.train, None, image_size=8, cache=True)
    third.preload(disk=True)
    assert len(decoded) == len(index.train) and decoded_cache_path(index.train, 8, False) != path
    assert (third.load(1)[0] >= 250).all() and (third.load(1)[1] <= 5).all()  # the red image (JPEG-rounded)


def test_share_cache_reads_the_other_datasets_images(tmp_path: Path) -> None:
    index = load_index("cub", make_cub(tmp_path / "cub"))
    train = ImageDataset(index.train, None, image_size=8, cache=True)
    train.preload()
    push = ImageDataset(index.train, eval_transform(8), image_size=8, cache=True)
    push.share_cache(train)
    for sample in index.train:
        sample.path.unlink()  # only the shared cache can serve the images now
    image, label, base = push[2]
    assert torch.equal(image, eval_transform(8)(train.load(2))) and (label, base) == (index.train[2].label, 2)


def test_corrupt_image_is_one_line_error_even_from_a_worker(tmp_path: Path) -> None:
    index = load_index("cub", make_cub(tmp_path / "cub"))
    bad = index.train[1].path
    bad.write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    ds = ImageDataset(index.train, None, image_size=8)
    with pytest.raises(DataError) as exc:
        ds[1]
    one_line_error(exc, str(bad), "cannot read image")
    batches = iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
    try:
        next(batches)
    except DataError as err:
        raised: BaseException = err.with_traceback(None)  # drop frames so the worker shuts down now
    else:
        raise AssertionError("no error from the worker")
    finally:
        del batches
    assert str(raised) == str(exc.value)
    assert "DataLoader worker" in (raised.worker_traceback or "")
    assert unwrap_worker_error(raised) is raised


def test_unwrap_worker_error() -> None:
    wrapped = P2PError("Caught P2PError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                       "call last):\n  File \"x.py\", line 1, in f\n    g()\np2p_cli.errors.P2PError: "
                       "bad thing in /a/b.png\n")
    assert str(unwrap_worker_error(wrapped)) == "bad thing in /a/b.png"
    try:
        try:
            raise P2PError("inner")
        except P2PError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as outer:
        assert str(unwrap_worker_error(outer)) == "inner"
    assert unwrap_worker_error(ValueError("bug")) is None


def test_crop_geometry_matches_the_loaded_pixels(tmp_path: Path) -> None:
    """A red dot at a known original location lands where parts_in_input says it does."""
    img = np.full((100, 200, 3), 200, np.uint8)
    img[42:48, 117:123] = (255, 0, 0)  # dot centred on (120, 45) in continuous coordinates
    path = tmp_path / "dot.png"
    Image.fromarray(img).save(path)
    sample = Sample(path, 0, bbox=(50.0, 20.0, 100.0, 50.0), parts=((120.0, 45.0, True), (10.0, 10.0, True)))
    assert image_dims(path) == (200, 100)
    for crop, size in ((True, 64), (False, 128)):
        x0, y0, sx, sy = input_geometry(sample, size, crop)
        expected = ((120 - 50) * 64 / 100, (45 - 20) * 64 / 50) if crop else (120 * 128 / 200, 45 * 128 / 100)
        assert (x0, y0) == ((50.0, 20.0) if crop else (0.0, 0.0))
        parts = parts_in_input(sample, size, crop)
        assert parts.shape == (2, 3) and parts.dtype == np.float32
        np.testing.assert_allclose(parts[0], [*expected, 1.0], rtol=1e-6)
        assert parts[1, 2] == (0.0 if crop else 1.0)  # (10, 10) lies outside the crop
        pixels = load_image(sample, size, crop).numpy()
        redness = pixels[0].astype(int) - pixels[1].astype(int)
        ys, xs = np.nonzero(redness > 100)
        assert abs((xs + 0.5).mean() - expected[0]) < 1.0 and abs((ys + 0.5).mean() - expected[1]) < 1.0
    assert parts_in_input(Sample(path, 0), 32).shape == (0, 3)


def test_bbox_outside_image_is_clipped(tmp_path: Path) -> None:
    path = save_image(tmp_path / "a.png", size=(50, 40))
    sample = Sample(path, 0, bbox=(-10.0, 30.0, 100.0, 100.0))
    x0, y0, sx, sy = input_geometry(sample, 20, True)
    assert (x0, y0, sx, sy) == (0.0, 30.0, 20 / 50, 20 / 10)
    degenerate = Sample(path, 0, bbox=(60.0, 60.0, 5.0, 5.0))
    assert input_geometry(degenerate, 20, True) == (0.0, 0.0, 20 / 50, 20 / 40)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the red band ends up on top
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    assert image_dims(path) == (20, 60)
    pixels = load_image(Sample(path, 0), 30).numpy()
    assert pixels[0, 1, 15] > 200 and pixels[2, 28, 15] > 200


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    with pytest.raises(P2PError):
        file_sha256(tmp_path / "missing")


# ----------------------------------------------------------------------------- transforms


def test_eval_transform_normalises_and_denormalize_inverts() -> None:
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8)
    x = eval_transform(12)(image)
    assert x.dtype == torch.float32 and x.shape == (3, 12, 12)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, (image.float() / 255 - mean) / std, atol=1e-6)
    back = denormalize(x)
    assert back.shape == (12, 12, 3) and back.dtype == np.uint8
    assert np.array_equal(back, image.permute(1, 2, 0).numpy())
    assert denormalize(x.unsqueeze(0).repeat(2, 1, 1, 1)).shape == (2, 12, 12, 3)
