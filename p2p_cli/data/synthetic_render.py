"""Drawing the synthetic dataset: part tokens, class codes and the rendering of one image.

Each image shows one *object*: a muted body ellipse at a random place with three part
*slots* at fixed offsets from the body centre (``top``, ``left``, ``right``; ±3 px jitter at
112 px, each part missing 12 % of the time). A part *token* is a shape × colour. A class is a
code — one token per slot — and the codes are chosen so that any two classes agree in at most
one slot: two visible parts identify the class, one part alone is ambiguous. Background
gradient, clutter strokes, 0-1 distractor tokens away from the object and Gaussian pixel noise
make the task non-trivial.

Coordinates: pixels of the rendered image, origin at its top-left corner, x to the right, y
down; pixel ``(i, j)`` covers ``[i, i+1) × [j, j+1)``, so a token drawn centred on pixel
``(i, j)`` has its annotated centre at ``(i + 0.5, j + 0.5)``.

Any change to what this module draws for the same inputs must bump
:data:`p2p_cli.data.synthetic.GENERATOR_VERSION` (it is part of the dataset cache key).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from p2p_cli.errors import P2PError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 235),
    "yellow": (245, 225, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 215, 225),
    "orange": (255, 140, 0),
    "white": (250, 250, 250),
}
PART_NAMES: tuple[str, ...] = ("top", "left", "right")
"""The three part slots, in part-id order."""
# Slot centre offsets from the body centre, in units of the image side (x right, y down).
SLOT_OFFSETS: tuple[tuple[float, float], ...] = ((0.06, -0.17), (-0.24, 0.05), (0.23, -0.02))
OUTLINE = (25, 25, 25)
"""RGB of every token's outline."""


@dataclass(frozen=True)
class Preset:
    """Rendering difficulty. Lengths are fractions of the image side unless noted."""

    part_radius: float  # token radius
    body_radii: tuple[float, float]  # body ellipse semi-axes (x, y)
    jitter_px: float  # max part offset jitter in pixels at 112 px (scaled with the image)
    missing: float  # probability that a part is absent
    noise_std: float  # Gaussian pixel noise, in uint8 units
    clutter: int  # number of background clutter strokes
    clutter_width: int  # max stroke width in pixels at 112 px
    max_distractors: int  # 0..max_distractors distractor tokens per image


PRESETS: dict[str, Preset] = {
    "easy": Preset(
        part_radius=0.075, body_radii=(0.17, 0.11), jitter_px=3, missing=0.12,
        noise_std=6.0, clutter=4, clutter_width=2, max_distractors=1,
    ),
    "hard": Preset(
        part_radius=0.048, body_radii=(0.15, 0.10), jitter_px=4, missing=0.12,
        noise_std=18.0, clutter=14, clutter_width=3, max_distractors=2,
    ),
}


@dataclass(frozen=True)
class Token:
    """A part token: one of :data:`SHAPES` filled with one of :data:`COLOURS`."""

    shape: str
    colour: str

    @property
    def name(self) -> str:
        """``<colour>-<shape>``, e.g. ``red-circle``."""
        return f"{self.colour}-{self.shape}"


# ----------------------------------------------------------------------------- class codes


def token_list() -> list[Token]:
    """All shape × colour tokens, ordered so that neighbours differ in shape *and* colour."""
    n_s, n_c = len(SHAPES), len(COLOURS)
    colours = list(COLOURS)
    # k -> (k mod n_s, (k + k // n_s) mod n_c) enumerates every pair once (n_s + 1 coprime to n_c).
    return [Token(SHAPES[k % n_s], colours[(k + k // n_s) % n_c]) for k in range(n_s * n_c)]


def slot_alphabets(num_classes: int) -> list[list[Token]]:
    """Per-slot token alphabets of size ``q = ceil(sqrt(num_classes))``.

    Slots get disjoint alphabets while ``3q`` tokens exist; beyond that they overlap (a token
    can then mean different things in different slots), still distinct within a slot.
    """
    q = max(2, math.isqrt(num_classes - 1) + 1)
    tokens = token_list()
    if q > len(tokens):
        raise P2PError(
            f"synthetic: num_classes={num_classes} is too many (at most {len(tokens) ** 2})"
        )
    return [[tokens[(s * q + v) % len(tokens)] for v in range(q)] for s in range(len(PART_NAMES))]


def class_codes(num_classes: int, seed: int) -> list[tuple[int, int, int]]:
    """Choose ``num_classes`` codes ``(a, b, (a + b) mod q)`` over a q-ary alphabet.

    Any two codes of this family agree in at most one position (fixing two coordinates fixes
    the third). Among seeded shuffles the selection whose slot values are used most evenly is
    kept, so that (when ``num_classes >= 2q``) every part value is shared by at least two
    classes and a single part never identifies the class.
    """
    q = max(2, math.isqrt(num_classes - 1) + 1)
    family = [(a, b, (a + b) % q) for a in range(q) for b in range(q)]
    rng = np.random.default_rng([seed, 7919])
    best: tuple[tuple[int, int], list[tuple[int, int, int]]] | None = None
    for _ in range(64):
        order = rng.permutation(len(family))
        chosen = sorted(family[i] for i in order[:num_classes])
        counts = [np.bincount([c[s] for c in chosen], minlength=q) for s in range(3)]
        score = (min(int(c.min()) for c in counts), -max(int(c.max()) for c in counts))
        if best is None or score > best[0]:
            best = (score, chosen)
    assert best is not None
    return best[1]


def class_names(codes: list[tuple[int, int, int]], alphabets: list[list[Token]]) -> list[str]:
    """Human-readable names such as ``red-circle_magenta-diamond_green-triangle``."""
    return ["_".join(alphabets[s][v].name for s, v in enumerate(code)) for code in codes]


# ----------------------------------------------------------------------------- rendering


def _muted(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> tuple[int, ...]:
    h, s, v = rng.random(), rng.uniform(*sat), rng.uniform(*val)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted colour with a random linear gradient, float32 (size, size, 3)."""
    base = np.array(_muted(rng, (0.0, 0.25), (0.55, 0.85)), dtype=np.float32)
    gx, gy = rng.uniform(-25, 25, size=2).astype(np.float32)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    return base + (gx * ramp[None, :, None] + gy * ramp[:, None, None])


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, p: Preset) -> None:
    max_w = max(1, round(p.clutter_width * size / 112))
    for _ in range(p.clutter):
        colour = _muted(rng, (0.0, 0.3), (0.3, 0.9))
        x0, y0 = rng.uniform(0, size, size=2)
        ang, length = rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.4) * size
        x1, y1 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
        if rng.random() < 0.7:
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, max_w + 1)))
        else:
            r = rng.uniform(0.02, 0.06) * size
            draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], float(rng.uniform(0, 360)),
                     float(rng.uniform(0, 360)), fill=colour, width=int(rng.integers(1, max_w + 1)))


def draw_token(draw: ImageDraw.ImageDraw, token: Token, x: int, y: int, r: int) -> None:
    """Draw ``token`` centred on pixel ``(x, y)``, fitting in ``[x - r, x + r]²``.

    Every shape is left-right symmetric, so a horizontal flip does not change a token.
    """
    fill = COLOURS[token.colour]
    box = [x - r, y - r, x + r, y + r]
    if token.shape == "circle":
        draw.ellipse(box, fill=fill, outline=OUTLINE)
    elif token.shape == "square":
        s = max(1, round(r * 0.85))
        draw.rectangle([x - s, y - s, x + s, y + s], fill=fill, outline=OUTLINE)
    elif token.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill, outline=OUTLINE)
    elif token.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill, outline=OUTLINE)
    elif token.shape == "cross":
        t = max(1, round(r * 0.38))
        pts = [(x - t, y - r), (x + t, y - r), (x + t, y - t), (x + r, y - t), (x + r, y + t),
               (x + t, y + t), (x + t, y + r), (x - t, y + r), (x - t, y + t), (x - r, y + t),
               (x - r, y - t), (x - t, y - t)]
        draw.polygon(pts, fill=fill, outline=OUTLINE)
    elif token.shape == "ring":
        w = max(2, round(r * 0.45))
        draw.ellipse(box, outline=OUTLINE, width=1)
        draw.ellipse([x - r + 1, y - r + 1, x + r - 1, y + r - 1], outline=fill, width=w)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(token.shape)


@dataclass(frozen=True)
class Rendered:
    """One generated image and its annotations (pixel coordinates, see module docstring)."""

    pixels: np.ndarray  # uint8 (size, size, 3)
    bbox: tuple[float, float, float, float]  # x, y, w, h of body + visible parts
    parts: tuple[tuple[float, float, bool], ...]  # per slot: (x, y, visible); (0, 0, False) if absent


def render(code: tuple[int, int, int], alphabets: list[list[Token]], size: int, preset: Preset,
           rng: np.random.Generator) -> Rendered:
    """Render one object of class ``code`` (an alphabet index per slot) on a cluttered background.

    Returns uint8 ``(size, size, 3)`` pixels with the object's bbox and per-slot part centres.
    Every random draw comes from ``rng`` in a fixed order, so the same generator state gives
    the same image.
    """
    scale = size / 112
    r = max(2, round(preset.part_radius * size))
    rx = round(preset.body_radii[0] * size * rng.uniform(0.92, 1.08))
    ry = round(preset.body_radii[1] * size * rng.uniform(0.92, 1.08))
    jit = max(1, round(preset.jitter_px * scale))
    # Body centre range keeps every slot (radius + jitter) inside the image.
    cx = int(round(rng.uniform(0.34, 0.66) * size))
    cy = int(round(rng.uniform(0.29, 0.85) * size))

    img = Image.fromarray(np.clip(_background(rng, size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    _draw_clutter(draw, rng, size, preset)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_muted(rng, (0.1, 0.35), (0.25, 0.45)))

    x0, y0, x1, y1 = cx - rx, cy - ry, cx + rx + 1, cy + ry + 1
    parts: list[tuple[float, float, bool]] = []
    for slot, value in enumerate(code):
        dx, dy = SLOT_OFFSETS[slot]
        jx, jy = rng.integers(-jit, jit + 1, size=2)
        present = bool(rng.random() >= preset.missing)
        if not present:
            parts.append((0.0, 0.0, False))
            continue
        px, py = cx + round(dx * size) + int(jx), cy + round(dy * size) + int(jy)
        draw_token(draw, alphabets[slot][value], px, py, r)
        parts.append((px + 0.5, py + 0.5, True))
        x0, y0, x1, y1 = min(x0, px - r), min(y0, py - r), max(x1, px + r + 1), max(y1, py + r + 1)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(size, x1), min(size, y1)
    _draw_distractors(draw, rng, alphabets, size, r, (x0, y0, x1, y1), preset.max_distractors)

    pixels = np.asarray(img, dtype=np.float32)
    if preset.noise_std > 0:
        pixels = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * preset.noise_std
    out = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Rendered(out, (float(x0), float(y0), float(x1 - x0), float(y1 - y0)), tuple(parts))


def _draw_distractors(draw: ImageDraw.ImageDraw, rng: np.random.Generator, alphabets: list[list[Token]],
                      size: int, r: int, obj: tuple[int, int, int, int], max_n: int) -> None:
    """0..max_n part tokens of random slots/values placed clear of the object box."""
    n = int(rng.integers(0, max_n + 1))
    for _ in range(n):
        slot = int(rng.integers(0, len(alphabets)))
        token = alphabets[slot][int(rng.integers(0, len(alphabets[slot])))]
        for _attempt in range(20):
            x, y = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
            if x + r + 2 < obj[0] or x - r - 2 > obj[2] or y + r + 2 < obj[1] or y - r - 2 > obj[3]:
                draw_token(draw, token, x, y, r)
                break



__all__ = [
    "COLOURS", "OUTLINE", "PART_NAMES", "PRESETS", "SHAPES", "SLOT_OFFSETS", "Preset", "Rendered", "Token",
    "class_codes", "class_names", "draw_token", "render", "slot_alphabets", "token_list",
]
