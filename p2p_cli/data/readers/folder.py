"""Image-folder reader: ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg``, or
``root/<class>/*.jpg`` without a split.

Classes are the sub-folders of ``train/`` (or of ``root`` without a split) in sorted order (hidden
ones skipped); a class folder under ``test/`` must also exist under ``train/``. Images are the
files whose suffix is in :data:`~p2p_cli.data.readers.common.IMAGE_EXTENSIONS`, sorted by name.
Without ``train/`` and ``test/``, every :data:`HOLDOUT_EVERY`-th image of each class in that
order (the 5th, 10th, …) is the test split: the same split on every machine. There are no boxes
or part annotations.
"""

from __future__ import annotations

from pathlib import Path

from p2p_cli.data.index import DataError, DatasetIndex, Issue, Sample
from p2p_cli.data.readers.common import IMAGE_EXTENSIONS, Reader, class_issues
from p2p_cli.errors import did_you_mean


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


HOLDOUT_EVERY = 5
"""Without a split, image i (0-based, in file-name order) of each class is a test image when
``(i + 1) % HOLDOUT_EVERY == 0``: 20 % of the images, at least one per class of five or more."""


def _unsplit(root: Path) -> bool:
    """True when ``root`` holds class folders of images and neither ``train/`` nor ``test/``."""
    if (root / "train").exists() or (root / "test").exists() or not root.is_dir():
        return False
    return any(_image_files(d) for d in _class_dirs(root))


def read_unsplit_folder(root: Path) -> tuple[DatasetIndex, list[Issue]]:
    """Index ``root/<class>/*.jpg`` and hold out every ``HOLDOUT_EVERY``-th image per class as test."""
    classes = [d.name for d in _class_dirs(root)]
    issues: list[Issue] = [Issue("split", "warn", f"{root}: no train/ and test/ folders; every "
                                 f"{HOLDOUT_EVERY}th image of each class (in file-name order) is the test split")]
    train: list[Sample] = []
    test: list[Sample] = []
    for label, name in enumerate(classes):
        for i, f in enumerate(_image_files(root / name)):
            (test if (i + 1) % HOLDOUT_EVERY == 0 else train).append(Sample(f, label))
    index = DatasetIndex("folder", root, classes, train, test, None)
    return index, issues + class_issues(classes, train, test, str(root))


def read_folder(root: Path) -> tuple[DatasetIndex, list[Issue]]:
    """Index ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg``; classes from ``train/``.

    Without ``train/`` and ``test/`` but with class folders of images: :func:`read_unsplit_folder`.
    A ``train/`` class folder without images is an error issue; a class without test images a warning.
    """
    if _unsplit(root):
        return read_unsplit_folder(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split}: folder not found (expected {root}/train/<class>/*.jpg "
                            f"and {root}/test/<class>/*.jpg, or {root}/<class>/*.jpg without a split)")
    class_dirs = _class_dirs(root / "train")
    if not class_dirs:
        raise DataError(f"{root / 'train'}: no class folders (expected {root}/train/<class>/*.jpg)")
    classes = [d.name for d in class_dirs]
    label = {name: k for k, name in enumerate(classes)}
    issues: list[Issue] = []
    samples: dict[str, list[Sample]] = {"train": [], "test": []}
    for split in ("train", "test"):
        for d in _class_dirs(root / split):
            if d.name not in label:
                raise DataError(f"{d}: class '{d.name}' is not in {root / 'train'}"
                                f"{did_you_mean(d.name, classes)}")
            files = _image_files(d)
            if not files and split == "train":
                exts = ", ".join(sorted(IMAGE_EXTENSIONS))
                issues.append(Issue("empty classes", "error", f"{d}: class folder has no images ({exts})"))
            samples[split] += [Sample(f, label[d.name]) for f in files]
    index = DatasetIndex("folder", root, classes, samples["train"], samples["test"], None)
    issues += [i for i in class_issues(classes, index.train, index.test, str(root / "train"))
               if not (i.check == "empty classes" and i.status == "error")]
    return index, issues


READER = Reader(read_folder)
