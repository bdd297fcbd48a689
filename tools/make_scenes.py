#!/usr/bin/env python3
"""Deterministic generator of the synthetic captioned-scenes dataset behind the blipq demo model.

Every image shows a few flat shapes on a plain background, in one of four kinds of scene:

* ``single``  one object at a place:         "a large red circle on the left of a white background"
* ``pair``    two objects side by side or one above the other:
                                             "a large red circle to the left of a small blue square"
* ``count``   2-4 identical objects:          "three small green triangles on a gray background"
* ``group``   2-3 identical objects and one other object:
                                             "two small red circles and a large blue star"

Each image gets 5 distinct reference captions. The first is the *canonical* phrasing (fixed words, fixed
order, shown above); the other four are drawn from a pool of rephrasings with synonyms ("big"/"large",
"little"/"small", "grey"/"gray", "center"/"middle"/"centre"), other word orders ("a small blue square
to the right of a large red circle") and less specific descriptions ("a red circle and a blue square").
A model trained on them learns the canonical phrasing as the most likely one, and the BLEU of its
greedy captions then measures how often it gets the scene right.

Shapes are drawn with Pillow at 4x and downsampled (antialiased), with small jitter in colour, size,
position and rotation. Everything is driven by ``random.Random(seed)`` per image, so a given
``(seed, split, index)`` always yields the same image and captions.

Output (COCO caption format, ``{"images": [...], "annotations": [...]}``):

* train split: ``<cache>/train/*.png`` + ``<cache>/train/captions.json`` (default /work/cache/scenes,
  outside the repo: regenerate rather than commit it)
* eval split:  ``data/demo-eval/*.png`` + ``data/demo-eval/captions.json`` (committed)

Usage::

    python3 tools/make_scenes.py                     # 40000 train images + 250 eval images
    python3 tools/make_scenes.py --train 0           # only the eval set
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------------
# Vocabulary of the scenes
# ---------------------------------------------------------------------------------------------------

SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "diamond"]
PLURAL = {s: (s + "es" if s.endswith("s") else s + "s") for s in SHAPES}

# name -> base RGB; every object gets +-12 jitter per channel
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 220),
    "yellow": (240, 205, 35),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
    "pink": (245, 125, 185),
}

# name -> base grey level of the background
BACKGROUNDS = {"white": 245, "black": 18, "gray": 128}

# radius (half extent) as a fraction of the image side; the two classes are well separated
SIZE_RANGE = {"small": (0.07, 0.095), "large": (0.15, 0.19)}

NUMBERS = {2: "two", 3: "three", 4: "four"}

# synonyms used by the rephrasings (the canonical word comes first)
SIZE_SYN = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
BG_SYN = {"white": ["white"], "black": ["black"], "gray": ["gray", "grey"]}

# single object: position name -> (canonical phrase, alternative phrases)
POSITIONS = {
    "left": ("on the left", ["on the left", "on the left side", "at the left"]),
    "right": ("on the right", ["on the right", "on the right side", "at the right"]),
    "top": ("at the top", ["at the top", "near the top", "in the upper part"]),
    "bottom": ("at the bottom", ["at the bottom", "near the bottom", "in the lower part"]),
    "centre": ("in the centre", ["in the centre", "in the center", "in the middle"]),
}

SCENE_KINDS = ["single", "pair", "count", "group"]
SCENE_WEIGHTS = [0.25, 0.35, 0.2, 0.2]


@dataclass
class Obj:
    shape: str
    colour: str
    size: str  # "small" | "large"
    cx: float  # centre, fraction of the side
    cy: float
    r: float  # radius, fraction of the side
    rot: float  # degrees


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------


def _poly(cx, cy, r, n, rot, inner=None):
    """Regular polygon (or star when ``inner`` is a radius ratio) around (cx, cy)."""
    pts = []
    k = n * 2 if inner else n
    for i in range(k):
        a = math.radians(rot - 90 + 360.0 * i / k)
        rr = r * (inner if inner and i % 2 else 1.0)
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _rotate(pts, cx, cy, rot):
    a = math.radians(rot)
    c, s = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts]


def draw_obj(d: ImageDraw.ImageDraw, o: Obj, side: int, rgb, bg_rgb):
    cx, cy, r = o.cx * side, o.cy * side, o.r * side
    if o.shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    elif o.shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
        ri = r * 0.55
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=bg_rgb)
    elif o.shape == "square":
        h = r * 0.85
        d.polygon(_rotate([(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)], cx, cy, o.rot), fill=rgb)
    elif o.shape == "diamond":
        d.polygon(_rotate([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], cx, cy, o.rot), fill=rgb)
    elif o.shape == "triangle":
        d.polygon(_poly(cx, cy + r * 0.15, r * 1.05, 3, o.rot), fill=rgb)
    elif o.shape == "star":
        d.polygon(_poly(cx, cy + r * 0.05, r * 1.05, 5, o.rot, inner=0.42), fill=rgb)
    elif o.shape == "cross":
        w = r * 0.34
        arm = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        d.polygon(_rotate([(cx + x, cy + y) for x, y in arm], cx, cy, o.rot), fill=rgb)
    else:  # pragma: no cover
        raise ValueError(o.shape)


def render(objs: list[Obj], bg: str, rng: random.Random, size: int, supersample: int = 4) -> Image.Image:
    side = size * supersample
    g = BACKGROUNDS[bg] + rng.randint(-6, 6)
    bg_rgb = (g, g, g)
    img = Image.new("RGB", (side, side), bg_rgb)
    d = ImageDraw.Draw(img)
    for o in objs:
        base = COLOURS[o.colour]
        rgb = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in base)
        draw_obj(d, o, side, rgb, bg_rgb)
    return img.resize((size, size), Image.LANCZOS)


# ---------------------------------------------------------------------------------------------------
# Scene sampling
# ---------------------------------------------------------------------------------------------------


def _radius(rng, size):
    lo, hi = SIZE_RANGE[size]
    return rng.uniform(lo, hi)


def _fits(o: Obj, others: list[Obj], gap=0.03) -> bool:
    if o.cx - o.r < 0.02 or o.cx + o.r > 0.98 or o.cy - o.r < 0.02 or o.cy + o.r > 0.98:
        return False
    return all(math.hypot(o.cx - p.cx, o.cy - p.cy) > o.r + p.r + gap for p in others)


def _rot(rng, shape):
    # small tilt only: a square must not turn into a diamond
    return 0.0 if shape in ("circle", "ring") else rng.uniform(-12, 12)


def _place_anywhere(rng, shape, colour, size, others, tries=200):
    for _ in range(tries):
        r = _radius(rng, size)
        o = Obj(shape, colour, size, rng.uniform(r + 0.02, 0.98 - r), rng.uniform(r + 0.02, 0.98 - r), r, _rot(rng, shape))
        if _fits(o, others):
            return o
    return None


def sample_scene(rng: random.Random) -> dict:
    """Returns {kind, bg, objs, ...} describing one scene (retries until the layout fits)."""
    while True:
        kind = rng.choices(SCENE_KINDS, SCENE_WEIGHTS)[0]
        bg = rng.choice(list(BACKGROUNDS))
        if kind == "single":
            pos = rng.choice(list(POSITIONS))
            size = rng.choice(["small", "large"])
            r = _radius(rng, size)
            j = lambda a, b: rng.uniform(a, b)  # noqa: E731
            cx, cy = {
                "left": (j(0.2, 0.3), j(0.38, 0.62)),
                "right": (j(0.7, 0.8), j(0.38, 0.62)),
                "top": (j(0.38, 0.62), j(0.2, 0.3)),
                "bottom": (j(0.38, 0.62), j(0.7, 0.8)),
                "centre": (j(0.44, 0.56), j(0.44, 0.56)),
            }[pos]
            shape = rng.choice(SHAPES)
            o = Obj(shape, rng.choice(list(COLOURS)), size, cx, cy, r, _rot(rng, shape))
            if _fits(o, []):
                return {"kind": kind, "bg": bg, "objs": [o], "pos": pos}
        elif kind == "pair":
            axis = rng.choice(["h", "v"])
            a_shape, b_shape = rng.choice(SHAPES), rng.choice(SHAPES)
            a_col, b_col = rng.choice(list(COLOURS)), rng.choice(list(COLOURS))
            if a_shape == b_shape and a_col == b_col:
                continue
            a_size, b_size = rng.choice(["small", "large"]), rng.choice(["small", "large"])
            ra, rb = _radius(rng, a_size), _radius(rng, b_size)
            first, second = rng.uniform(0.2, 0.32), rng.uniform(0.68, 0.8)
            oa_c, ob_c = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
            if axis == "h":
                a = Obj(a_shape, a_col, a_size, first, oa_c, ra, _rot(rng, a_shape))
                b = Obj(b_shape, b_col, b_size, second, ob_c, rb, _rot(rng, b_shape))
            else:
                a = Obj(a_shape, a_col, a_size, oa_c, first, ra, _rot(rng, a_shape))
                b = Obj(b_shape, b_col, b_size, ob_c, second, rb, _rot(rng, b_shape))
            if _fits(a, []) and _fits(b, [a]):
                return {"kind": kind, "bg": bg, "objs": [a, b], "axis": axis}
        elif kind == "count":
            n = rng.choice([2, 3, 4])
            size = "small" if n == 4 else rng.choice(["small", "large"])
            shape, col = rng.choice(SHAPES), rng.choice(list(COLOURS))
            objs = []
            for _ in range(n):
                o = _place_anywhere(rng, shape, col, size, objs)
                if o is None:
                    break
                objs.append(o)
            if len(objs) == n:
                return {"kind": kind, "bg": bg, "objs": objs, "n": n}
        else:  # group: n identical small objects + one other object
            n = rng.choice([2, 3])
            g_shape, g_col = rng.choice(SHAPES), rng.choice(list(COLOURS))
            s_shape, s_col = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if g_shape == s_shape and g_col == s_col:
                continue
            s_size = rng.choice(["small", "large"])
            single = _place_anywhere(rng, s_shape, s_col, s_size, [])
            objs = [single]
            for _ in range(n):
                o = _place_anywhere(rng, g_shape, g_col, "small", objs)
                if o is None:
                    break
                objs.append(o)
            if len(objs) == n + 1:
                return {"kind": kind, "bg": bg, "objs": objs, "n": n}


# ---------------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------------


def _np(o: Obj, size_word: str, art: str = "a") -> str:
    return f"{art} {size_word} {o.colour} {o.shape}"


class _Slots(dict):
    """``str.format_map`` slots of a caption template: a callable slot is called at each use, so every
    use draws its own synonyms, in the template's left-to-right order."""

    def __getitem__(self, key):
        v = dict.__getitem__(self, key)
        return v() if callable(v) else v


# Rephrasing templates per scene kind. Slots: {o} (single and count), {a} {b} (pair), {s} {g}
# (group) are the objects (``{a.colour}``, ``{a.shape}``); {np}, {np_a}, {np_b}, {np_s} their noun
# phrase with a size synonym; {sz} a size synonym of the single/count object, {sz_s} of the group's
# odd one out; {bg} a background synonym; {pos} an alternative position phrase; the rest see
# captions_for.
POOLS = {
    "single": [
        "{np} {pos} of a {bg} background",
        "a {bg} background with {np} {pos}",
        "{pos}, {np} on {bg}",
        "a {o.colour} {o.shape}, {sz}, {pos}",
        "one {sz} {o.colour} {o.shape} {pos} of the image",
        "there is {np} {pos}",
        "{np} on a {bg} background",
        "a single {o.colour} {o.shape} {pos} of the picture",
    ],
    "pair": [
        "{np_a} {rel} {np_b}",
        "{np_b} {inv} {np_a}",
        "{np_a} {pa} and {np_b} {pb}",
        "{np_a} and {np_b} on a {bg} background",
        "a {a.colour} {a.shape} and a {b.colour} {b.shape}",
        "two shapes: {np_a} and {np_b}",
        "{np_a} {rel2} {np_b}",
        "{np_b} {inv2} {np_a}",
    ],
    "count": [
        "{num} {sz} {o.colour} {pl} on a {bg} background",
        "{num} {o.colour} {pl}, all {sz}",
        "a group of {num} {sz} {o.colour} {pl}",
        "there are {num} {sz} {o.colour} {pl} on a {bg} background",
        "{num} {sz} {o.colour} {pl}",
        "a {bg} background with {num} {sz} {o.colour} {pl}",
        "{some} {sz} {o.colour} {pl}",
    ],
    "group": [
        "{grp} and {np_s}",
        "{np_s} and {grp}",
        "{grp} next to {np_s}",
        "{np_s} with {grp}",
        "{grp} and one {sz_s} {s.colour} {s.shape} on a {bg} background",
        "{num} {g.colour} {pl} and a {s.colour} {s.shape} on a {bg} background",
    ],
}


def captions_for(scene: dict, rng: random.Random, k: int = 5) -> list[str]:
    """Canonical caption first, then k-1 distinct rephrasings sampled from the scene's pool."""
    kind, bg, objs = scene["kind"], scene["bg"], scene["objs"]
    sz = lambda o: rng.choice(SIZE_SYN[o.size])  # noqa: E731
    np_ = lambda o: lambda: _np(o, sz(o))  # noqa: E731
    slots = _Slots(bg=lambda: rng.choice(BG_SYN[bg]))

    if kind == "single":
        o = objs[0]
        canon_pos, alt_pos = POSITIONS[scene["pos"]]
        canon = f"{_np(o, o.size)} {canon_pos} of a {bg} background"
        slots.update(o=o, np=np_(o), sz=lambda: sz(o), pos=lambda: rng.choice(alt_pos))
    elif kind == "pair":
        a, b = objs
        if scene["axis"] == "h":
            rel, inv, pa, pb = "to the left of", "to the right of", "on the left", "on the right"
            rel2, inv2 = "left of", "right of"
        else:
            rel, inv, pa, pb = "above", "below", "at the top", "at the bottom"
            rel2, inv2 = "over", "under"
        canon = f"{_np(a, a.size)} {rel} {_np(b, b.size)}"
        slots.update(a=a, b=b, np_a=np_(a), np_b=np_(b), rel=rel, inv=inv, pa=pa, pb=pb, rel2=rel2, inv2=inv2)
    elif kind == "count":
        o, n = objs[0], scene["n"]
        num, pl = NUMBERS[n], PLURAL[o.shape]
        canon = f"{num} {o.size} {o.colour} {pl} on a {bg} background"
        some = "a pair of" if n == 2 else "several"
        slots.update(o=o, sz=lambda: sz(o), num=num, pl=pl, some=some)
    else:  # group
        s, g, n = objs[0], objs[1], scene["n"]
        num, pl = NUMBERS[n], PLURAL[g.shape]
        canon = f"{num} small {g.colour} {pl} and {_np(s, s.size)}"
        grp = lambda: f"{num} {sz(g)} {g.colour} {pl}"  # noqa: E731
        slots.update(s=s, g=g, np_s=np_(s), sz_s=lambda: sz(s), grp=grp, num=num, pl=pl)
    pool = POOLS[kind]

    caps = [canon]
    order = list(range(len(pool)))
    rng.shuffle(order)
    for _ in range(20):  # draw until we have k distinct captions (pools are large enough)
        for i in order:
            if len(caps) == k:
                break
            c = " ".join(pool[i].format_map(slots).split())
            if c not in caps:
                caps.append(c)
        if len(caps) == k:
            break
    return caps


# ---------------------------------------------------------------------------------------------------
# Dataset writing
# ---------------------------------------------------------------------------------------------------

SPLIT_SALT = {"train": 1_000_003, "eval": 7_000_003}


def make_example(seed: int, split: str, index: int, size: int):
    rng = random.Random(seed * 10_000_019 + SPLIT_SALT[split] * 7919 + index)
    scene = sample_scene(rng)
    img = render(scene["objs"], scene["bg"], rng, size)
    caps = captions_for(scene, rng)
    return img, caps, scene["kind"]


def write_split(out_dir: Path, seed: int, split: str, n: int, size: int, prefix: str) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    images, anns, kinds = [], [], {}
    t0 = time.time()
    for i in range(n):
        img, caps, kind = make_example(seed, split, i, size)
        name = f"{prefix}_{i:06d}.png"
        img.save(out_dir / name, optimize=True)
        images.append({"id": i, "file_name": name})
        for c in caps:
            anns.append({"id": len(anns), "image_id": i, "caption": c})
        kinds[kind] = kinds.get(kind, 0) + 1
        if (i + 1) % 5000 == 0:
            print(f"  {split}: {i + 1}/{n} images ({time.time() - t0:.0f}s)", flush=True)
    coco = {
        "info": {
            "description": "blipq synthetic captioned scenes",
            "generator": "tools/make_scenes.py",
            "seed": seed,
            "split": split,
            "image_size": size,
            "note": "the first caption of each image is the canonical phrasing",
        },
        "images": images,
        "annotations": anns,
    }
    with open(out_dir / "captions.json", "w") as f:
        json.dump(coco, f, indent=1)
    print(f"{split}: {n} images, {len(anns)} captions -> {out_dir} ({kinds})", flush=True)
    return coco


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=40000, help="number of training images (0: skip)")
    ap.add_argument("--eval", type=int, default=250, help="number of eval images (0: skip)")
    ap.add_argument("--size", type=int, default=128, help="side of the written PNGs in pixels")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("BLIPQ_SCENES", "/work/cache/scenes")))
    ap.add_argument("--eval-dir", type=Path, default=REPO / "data" / "demo-eval")
    args = ap.parse_args()

    if args.eval:
        if args.eval_dir.exists():
            for p in args.eval_dir.glob("*.png"):
                p.unlink()
        write_split(args.eval_dir, args.seed, "eval", args.eval, args.size, "scene")
    if args.train:
        d = args.cache / "train"
        if d.exists():
            shutil.rmtree(d)
        write_split(d, args.seed, "train", args.train, args.size, "train")


if __name__ == "__main__":
    main()
