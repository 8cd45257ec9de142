"""`p2p predict`: batched inference with the prototypes behind every prediction.

The run is the session's tiny teacher (``shared_teacher`` in conftest.py; predict only reads it);
the images are written by the tests.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from p2p_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from p2p_cli.errors import P2PError
from p2p_cli.models.protopnet import log_similarity
from p2p_cli.models.runs import load_run
from p2p_cli.runtime.device import make_runtime
from p2p_cli.runtime.reporter import Reporter
from p2p_cli.workflows.predict import PredictRequest, collect_images, csv_text, predict
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def run(shared_teacher: Path) -> Path:
    return shared_teacher


def write_images(folder: Path, n_good: int, n_bad: int) -> tuple[list[Path], list[Path]]:
    """``n_good`` random images of different sizes and formats and ``n_bad`` broken files."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    good = []
    for i in range(n_good):
        w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        path = folder / f"img_{i:03d}.{('png', 'jpg')[i % 2]}"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        good.append(path)
    bad = []
    for i in range(n_bad):
        path = folder / f"broken_{i}.jpg"
        if i % 2 == 0:
            path.write_text("this is not an image")
        else:
            path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG header and nothing after it
        bad.append(path)
    return good, bad


def test_folder_of_50_images_with_2_corrupt_gives_48_rows_and_names_the_bad_files(run, tmp_path, capsys):
    good, bad = write_images(tmp_path / "photos", 48, 2)
    out_csv, out_json = tmp_path / "pred.csv", tmp_path / "pred.json"
    code, out, err = run_cli(["predict", "--model", str(run), str(tmp_path / "photos"), "--top-k", "3",
                              "--csv", str(out_csv), "--json", str(out_json), "--batch-size", "16",
                              "--device", "cpu", "--precision", "fp32"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 48
    assert {r["image"] for r in rows} == {str(p) for p in good}
    doc = json.loads(out_json.read_text())
    assert len(doc["predictions"]) == 48 and len(doc["skipped"]) == 2
    assert {s["image"] for s in doc["skipped"]} == {str(p) for p in bad}
    for p in bad:
        assert str(p) in err
    assert "48 images predicted, 2 skipped" in err and "Traceback" not in err
    assert "img_000.png" in out  # the table


def test_rows_match_the_model(run, tmp_path):
    """Probability = softmax of the logits; top-k = the k smallest min distances, with ProtoPNet's
    similarity, the argmin cell and its box scaled to the image's own pixels."""
    path = tmp_path / "wide.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)).save(path)  # W=64, H=40
    rt = make_runtime("cpu", "fp32", False)
    result = predict(PredictRequest(model=str(run), inputs=[path], top_k=4), rt, Reporter(enabled=False))
    (row,) = result.predictions
    loaded = load_run(run)
    s = loaded.image_size
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB").resize((s, s), Image.Resampling.BILINEAR))
                         .copy()).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = loaded.model(x)
    probs = torch.softmax(out.logits, 1)[0]
    assert row.class_index == int(probs.argmax()) and row.class_name == loaded.classes[row.class_index]
    assert row.probability == pytest.approx(float(probs.max()), abs=1e-5)
    assert (row.width, row.height) == (64, 40)
    assert result.grid == (2, 2)
    order = torch.argsort(out.min_distances[0])[:4].tolist()
    assert [p["prototype"] for p in row.prototypes] == order
    sims = [p["similarity"] for p in row.prototypes]
    assert sims == sorted(sims, reverse=True)
    for p in row.prototypes:
        j = p["prototype"]
        d = out.distances[0, j]
        h, w = divmod(int(d.flatten().argmin()), d.shape[1])
        assert (p["h"], p["w"]) == (h, w)
        assert p["distance"] == pytest.approx(float(d.min()), abs=1e-5)
        assert p["similarity"] == pytest.approx(float(log_similarity(d.min())), rel=1e-5)
        assert p["box"] == [w * 32, h * 20, (w + 1) * 32, (h + 1) * 20]  # a 2×2 grid over 64×40 pixels
        assert p["classes"] == [loaded.classes[j // 2]]  # 2 prototypes per class


def test_json_to_stdout_is_pure_json(run, tmp_path, capsys):
    good, _ = write_images(tmp_path / "few", 3, 0)
    code, out, err = run_cli(["predict", "-m", str(run), *map(str, good), "--json", "-", "-k", "2", "-q",
                              "--device", "cpu"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [p["image"] for p in doc["predictions"]] == [str(p) for p in good]
    assert all(len(p["prototypes"]) == 2 and p["class"] for p in doc["predictions"])


def test_csv_columns_per_rank(run, tmp_path):
    good, _ = write_images(tmp_path / "c", 2, 0)
    result = predict(PredictRequest(model=str(run), inputs=good, top_k=2), make_runtime("cpu", "fp32", False),
                     Reporter(enabled=False))
    rows = list(csv.reader(io.StringIO(csv_text(result, 2))))
    assert rows[0][:6] == ["image", "width", "height", "class", "class_index", "probability"]
    assert rows[0][6:16] == ["proto1", "proto1_classes", "proto1_similarity", "proto1_distance", "proto1_h",
                             "proto1_w", "proto1_x0", "proto1_y0", "proto1_x1", "proto1_y1"]
    assert len(rows) == 3 and all(len(r) == len(rows[0]) for r in rows)


def test_only_bad_images_is_an_error(run, tmp_path, capsys):
    _, bad = write_images(tmp_path / "bad", 0, 2)
    code, _, err = run_cli(["predict", "-m", str(run), *map(str, bad), "--device", "cpu"], capsys)
    assert code == 2 and "none of the 2 images could be read" in err and "Traceback" not in err


def test_collect_images(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for rel in ("a/x.jpg", "a/sub/y.PNG", "a/notes.txt", "a/.hidden/z.jpg", "b.txt"):
        (tmp_path / rel).write_bytes(b"")
    found = collect_images([tmp_path / "a", tmp_path / "b.txt", tmp_path / "a" / "x.jpg"])
    assert found == [tmp_path / "a" / "sub" / "y.PNG", tmp_path / "a" / "x.jpg", tmp_path / "b.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(P2PError, match="no images"):
        predict(PredictRequest(model="whatever", inputs=[tmp_path / "empty"]), make_runtime("cpu", "fp32", False),
                Reporter(enabled=False))
