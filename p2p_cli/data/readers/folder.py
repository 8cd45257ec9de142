"""Image-folder reader: ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg``.

Classes are the sub-folders of ``train/`` in sorted order (hidden ones skipped); a class folder
under ``test/`` must also exist under ``train/``. Images are the files whose suffix is in
:data:`~p2p_cli.data.readers.common.IMAGE_EXTENSIONS`, sorted by name. There are no boxes or
part annotations.
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


def read_folder(root: Path) -> tuple[DatasetIndex, list[Issue]]:
    """Index ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg``; classes from ``train/``.

    A ``train/`` class folder without images is an error issue; a class without test images a warning.
    """
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(f"{root / split}: folder not found (expected {root}/train/<class>/*.jpg "
                            f"and {root}/test/<class>/*.jpg)")
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
