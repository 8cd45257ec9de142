"""The synthetic generator: determinism, class codes, annotations, the cache."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from p2p_cli.data import synthetic as syn
from p2p_cli.data.readers import load_index
from p2p_cli.errors import P2PError

TINY = dict(num_classes=3, train_per_class=3, test_per_class=1, image_size=64, seed=1)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_generation_is_bit_identical_and_seeded(tmp_path: Path) -> None:
    a = tree_bytes(syn.synthesize(tmp_path / "a", **TINY))
    b = tree_bytes(syn.synthesize(tmp_path / "b", **TINY))
    assert a == b
    assert len([k for k in a if k.endswith(".png")]) == 12
    c = tree_bytes(syn.synthesize(tmp_path / "c", **{**TINY, "seed": 2}))
    assert c.keys() != a.keys() or any(a[k] != c[k] for k in a if k.endswith(".png"))


def test_cub_layout_is_read_by_the_cub_reader(tmp_path: Path) -> None:
    root = syn.synthesize(tmp_path / "d", **TINY)
    for rel in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt",
                "classes.txt", "parts/parts.txt", "parts/part_locs.txt", "synthetic.json"):
        assert (root / rel).is_file(), rel
    index = load_index("synthetic", root)
    assert (len(index.classes), len(index.train), len(index.test)) == (3, 9, 3)
    assert index.part_names == list(syn.PART_NAMES)
    meta = json.loads((root / "synthetic.json").read_text())
    assert [c["name"] for c in meta["classes"]] == index.classes
    assert meta["params"]["image_size"] == 64
    assert all(len(s.parts) == 3 for s in index.train + index.test)
    # names are short and readable: colour-shape per slot
    assert all(len(name.split("_")) == 3 and name.count("-") == 3 for name in index.classes)


@pytest.mark.parametrize("n", [2, 3, 10, 50, 200, 300])
def test_two_classes_share_at_most_one_slot_value(n: int) -> None:
    alphabets = syn.slot_alphabets(n)
    codes = syn.class_codes(n, seed=0)
    assert len(set(codes)) == n
    tokens = [tuple(alphabets[s][v] for s, v in enumerate(code)) for code in codes]
    assert len(set(syn.class_names(codes, alphabets))) == n
    for a, b in itertools.combinations(tokens, 2):
        assert sum(x == y for x, y in zip(a, b, strict=True)) <= 1
    for alphabet in alphabets:  # a slot never uses one token for two values
        assert len(set(alphabet)) == len(alphabet)


def test_one_part_alone_is_ambiguous_for_the_default_classes() -> None:
    codes = syn.class_codes(10, seed=0)
    for slot in range(3):
        counts = np.bincount([c[slot] for c in codes])
        assert counts[counts > 0].min() >= 2


def _colour_at(pixels: np.ndarray, x: float, y: float) -> np.ndarray:
    return pixels[int(y), int(x)].astype(int)


def test_part_locations_are_on_the_drawn_parts() -> None:
    """Noise-free renders: the annotated centre pixel has exactly the token's colour."""
    clean = syn.Preset(part_radius=0.075, body_radii=(0.17, 0.11), jitter_px=3, missing=0.12,
                       noise_std=0.0, clutter=0, clutter_width=1, max_distractors=0)
    alphabets = syn.slot_alphabets(10)
    codes = syn.class_codes(10, seed=0)
    size, checked, missing = 112, 0, 0
    for i in range(60):
        code = codes[i % len(codes)]
        out = syn.render(code, alphabets, size, clean, np.random.default_rng(i))
        x, y, w, h = out.bbox
        assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
        for slot, (px, py, visible) in enumerate(out.parts):
            if not visible:
                missing += 1
                assert (px, py) == (0.0, 0.0)
                continue
            assert 0 <= px < size and 0 <= py < size
            assert x <= px <= x + w and y <= py <= y + h
            token = alphabets[slot][code[slot]]
            colour = np.array(syn.COLOURS[token.colour])
            if token.shape == "ring":  # the centre is the hole: look on the ring itself
                r = round(clean.part_radius * size)
                found = [np.abs(_colour_at(out.pixels, px + d, py) - colour).max() for d in range(-r, r + 1)]
                assert min(found) == 0
            else:
                assert np.array_equal(_colour_at(out.pixels, px, py), colour), (token, px, py)
            checked += 1
    assert checked > 120 and 0.03 < missing / (checked + missing) < 0.25


def test_written_part_locations_match_the_saved_images(tmp_path: Path) -> None:
    root = syn.synthesize(tmp_path / "e", **{**TINY, "image_size": 112})
    index = load_index("synthetic", root)
    meta = json.loads((root / "synthetic.json").read_text())
    for sample in index.train + index.test:
        pixels = np.asarray(Image.open(sample.path).convert("RGB")).astype(int)
        code = meta["classes"][sample.label]["parts"]
        for name, (x, y, visible) in zip(index.part_names, sample.parts, strict=True):
            if not visible or code[name]["shape"] == "ring":
                continue
            window = pixels[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].reshape(-1, 3)
            colour = np.array(syn.COLOURS[code[name]["colour"]])
            # mild noise (std 6): the mean of a 3x3 window stays close to the token colour
            assert np.abs(window.mean(0) - colour).max() < 12, (sample.path, name)


def test_bad_parameters_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(P2PError, match=r"did you mean 'num_classes'"):
        syn.normalize_params(num_class=3)
    with pytest.raises(P2PError, match=r"did you mean 'hard'"):
        syn.normalize_params(preset="hardd")
    with pytest.raises(P2PError, match="image_size"):
        syn.normalize_params(image_size=16)
    with pytest.raises(P2PError, match="num_classes"):
        syn.normalize_params(num_classes=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(P2PError, match="not empty"):
        syn.synthesize(tmp_path / "full", **TINY)
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    syn.synthesize(tmp_path / "full", overwrite=True, **TINY)
    assert not (tmp_path / "full" / "x.txt").exists()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("P2P_CACHE_DIR", str(tmp_path))
    assert syn.default_cache_dir() == tmp_path
    monkeypatch.delenv("P2P_CACHE_DIR")
    assert syn.default_cache_dir() == Path.home() / ".cache" / "p2p"


def test_ensure_synthetic_generates_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = syn.ensure_synthetic(**TINY)
    assert path.parent == cache / "synthetic" and syn.is_complete(path)
    assert path == syn.synthetic_cache_path(**TINY)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated")

    monkeypatch.setattr(syn, "_write_tree", boom)
    assert syn.ensure_synthetic(**TINY) == path


def test_ensure_synthetic_never_trusts_a_partial_dataset(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_render = syn.render

    def dying_render(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # like a killed run
        return real_render(*args, **kwargs)

    monkeypatch.setattr(syn, "render", dying_render)
    with pytest.raises(KeyboardInterrupt):
        syn.ensure_synthetic(**TINY)
    target = syn.synthetic_cache_path(**TINY)
    assert not target.exists()
    assert list((cache / "synthetic").iterdir()) == []  # temp dir cleaned up

    # a directory without the completion marker (e.g. a copy interrupted by hand) is replaced
    target.mkdir(parents=True)
    (target / "images.txt").write_text("1 half/written.png\n")
    monkeypatch.setattr(syn, "render", real_render)
    assert syn.ensure_synthetic(**TINY) == target
    assert syn.is_complete(target)
    assert len(load_index("synthetic", target).train) == 9


def test_load_index_synthetic_without_root_uses_the_cache(cache: Path) -> None:
    index = load_index("synthetic", None, **TINY)
    assert index.name == "synthetic" and index.root.parent == cache / "synthetic"
    other = load_index("synthetic", None, **{**TINY, "seed": 5})
    assert other.root != index.root
    with pytest.raises(P2PError, match="unknown synthetic dataset option 'clases'"):
        load_index("synthetic", None, clases=3)
