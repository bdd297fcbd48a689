#!/usr/bin/env python3
"""Record PIL reference outputs for blipq's image preprocessing (tests/preprocess.rs).

Writes tests/fixtures/resize/:
  * small source images cut from scikit-image's bundled photos, in every format and pixel layout
    blipq decodes (PNG RGB / gray / gray+alpha / RGBA / palette / palette+tRNS / 1-bit / 16-bit,
    JPEG, lossless and lossy WebP, GIF, BMP);
  * `<source>.rgb.png`: what transformers 5's `convert_to_rgb` makes of it with PIL (alpha
    composited onto white; otherwise PIL's `convert("RGB")`), when that differs from the file;
  * `<input>.<W>x<H>.<filter>.png`: PIL's `Image.resize((W, H), filter)` of that RGB image;
  * `<source>.<H>x<W>.pixel_values.f32`: BlipImageProcessor's pixel_values (CHW float32,
    little-endian) computed with the numpy operations transformers uses, cross-checked against
    `transformers.BlipImageProcessorPil` when transformers is installed;
  * manifest.json describing all of it.

Only PIL and numpy are needed:  python tools/make_resize_fixtures.py [--skimage-data DIR]
"""

import argparse
import importlib.util
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "resize"

FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
BLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
BLIP_STD = [0.26862954, 0.26130258, 0.27577711]
RESCALE = 0.00392156862745098


def skimage_data_dir():
    # Locate the data directory without importing scikit-image (only PIL + numpy are required).
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-image not found; pass --skimage-data DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def png_bytes(arr, color_type, bit_depth):
    """A minimal PNG writer for the 16-bit layouts PIL cannot save (RGB, RGBA, gray+alpha)."""
    h, w = arr.shape[:2]
    raw = arr.astype(">u2" if bit_depth == 16 else np.uint8).tobytes()
    stride = len(raw) // h
    data = b"".join(b"\x00" + raw[i * stride : (i + 1) * stride] for i in range(h))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(data, 9))
        + chunk(b"IEND", b"")
    )


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def convert_to_rgb(img):
    """transformers 5 `image_transforms.convert_to_rgb` for a PIL image."""
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def pixel_values(rgb, height, width):
    """BlipImageProcessorPil: resize (PIL bicubic), rescale (f64 -> f32), normalize (f32), CHW."""
    arr = np.array(rgb.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None))
    arr = np.moveaxis(arr, -1, 0)
    arr = (arr.astype(np.float64) * RESCALE).astype(np.float32)
    mean = np.array(BLIP_MEAN, dtype=np.float32)
    std = np.array(BLIP_STD, dtype=np.float32)
    return ((arr.T - mean) / std).T.astype(np.float32)


def sources(data):
    """(file name, encoded bytes, note) for every source image."""
    astro = Image.open(data / "astronaut.png").convert("RGB")
    astro = astro.resize((120, 120), Image.Resampling.LANCZOS).crop((10, 10, 110, 90))  # 100x80
    coffee = Image.open(data / "coffee.png").convert("RGB").resize((72, 48), Image.Resampling.LANCZOS)
    chelsea = Image.open(data / "chelsea.png").convert("RGB").resize((72, 48), Image.Resampling.LANCZOS)
    # Drop the ICC profile PIL carries along (it would only add bytes; colour is not managed).
    chelsea = Image.fromarray(np.array(chelsea))
    astro = Image.fromarray(np.array(astro))
    camera = Image.open(data / "camera.png").convert("L").resize((64, 64), Image.Resampling.LANCZOS)
    # logo.png is fully opaque: give it an alpha ramp from 0 (corners) to 255 (centre) so that
    # compositing onto white is exercised at every level.
    logo = Image.open(data / "logo.png").convert("RGB").resize((60, 60), Image.Resampling.LANCZOS)
    yy, xx = np.mgrid[0:60, 0:60]
    ramp = np.clip(300 - np.hypot(yy - 29.5, xx - 29.5) * 8, 0, 255).astype(np.uint8)
    logo = Image.fromarray(np.dstack([np.array(logo), ramp]), "RGBA")

    out = [
        ("astronaut.png", encode(astro, "PNG", optimize=True), "RGB PNG"),
        ("tiny.png", encode(astro.crop((50, 24, 73, 41)), "PNG"), "23x17 RGB PNG, for upscaling"),
        ("coffee.jpg", encode(coffee, "JPEG", quality=90), "JPEG 4:2:0"),
        ("chelsea.webp", encode(chelsea, "WEBP", lossless=True), "lossless WebP"),
        ("chelsea_lossy.webp", encode(chelsea, "WEBP", quality=80), "lossy WebP"),
        ("astronaut.bmp", encode(astro.resize((40, 30), Image.Resampling.LANCZOS), "BMP"), "24-bit BMP"),
        ("camera_gray.png", encode(camera, "PNG", optimize=True), "8-bit gray PNG (L)"),
        ("logo_rgba.png", encode(logo, "PNG", optimize=True), "RGBA PNG with real transparency"),
    ]

    pal = chelsea.quantize(48)
    out.append(("chelsea_palette.png", encode(pal, "PNG", optimize=True), "palette PNG (P)"))
    out.append(
        ("chelsea_palette_trns.png", encode(pal, "PNG", transparency=3), "palette PNG with tRNS (P + transparency)")
    )
    out.append(("chelsea.gif", encode(pal, "GIF", transparency=5), "GIF (P) with a transparent index"))

    small_cam = np.array(camera.resize((48, 48), Image.Resampling.LANCZOS))
    alpha = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1))
    out.append(("camera_la.png", png_bytes(np.stack([small_cam, alpha], -1), 4, 8), "8-bit gray+alpha PNG (LA)"))
    out.append(("camera_1bit.png", encode(camera.resize((48, 48)).convert("1"), "PNG"), "1-bit PNG (mode 1)"))

    # 16-bit gray: values up to 1020 so that PIL's clipping to 255 matters for part of the image.
    cam16 = (np.array(camera).astype(np.uint16) * 4).astype(np.uint16)
    out.append(("camera_gray16.png", encode(Image.fromarray(cam16), "PNG"), "16-bit gray PNG (I;16), 0..1020"))
    # 16-bit gray with a tRNS key: PIL ignores the key for I;16 and clips (the image crate expands
    # it to gray+alpha, which must not be mistaken for a real 16-bit gray+alpha image).
    g16 = Image.fromarray((np.array(camera.resize((32, 32), Image.Resampling.LANCZOS)).astype(np.uint16) * 3))
    out.append(("camera_gray16_trns.png", encode(g16, "PNG", transparency=300), "16-bit gray PNG with tRNS"))
    coffee16 = np.array(coffee.resize((32, 24), Image.Resampling.LANCZOS)).astype(np.uint16)
    rng = np.random.default_rng(0)
    coffee16 = coffee16 * 257 + rng.integers(0, 256, coffee16.shape, dtype=np.uint16) - 128
    coffee16 = np.clip(coffee16.astype(np.int32) , 0, 65535).astype(np.uint16)
    out.append(("coffee_rgb16.png", png_bytes(coffee16, 2, 16), "16-bit RGB PNG"))
    logo16 = np.array(logo.resize((40, 40), Image.Resampling.LANCZOS)).astype(np.uint16) * 257
    out.append(("logo_rgba16.png", png_bytes(logo16, 6, 16), "16-bit RGBA PNG"))
    la16 = np.stack([small_cam.astype(np.uint16) * 257, alpha.astype(np.uint16) * 257], -1)
    out.append(("camera_la16.png", png_bytes(la16, 4, 16), "16-bit gray+alpha PNG"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skimage-data", type=Path, default=None)
    args = ap.parse_args()
    data = args.skimage_data or skimage_data_dir()

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()

    manifest = {"pil_version": Image.__version__, "sources": [], "resize": [], "pixel_values": []}
    rgb_files = {}
    for name, blob, note in sources(data):
        (OUT / name).write_bytes(blob)
        img = Image.open(io.BytesIO(blob))
        img.seek(0)
        rgb = convert_to_rgb(img)
        # The RGB reference is the file itself when it is an RGB PNG; otherwise save PIL's pixels.
        bit_depth = blob[24] if blob.startswith(b"\x89PNG") else None
        if bit_depth == 8 and img.mode == "RGB" and img.info.get("transparency") is None:
            rgb_name = name
        else:
            rgb_name = name + ".rgb.png"
            rgb.save(OUT / rgb_name, optimize=True)
        rgb_files[name] = (rgb_name, rgb)
        lossy = name.endswith((".jpg", "_lossy.webp"))
        manifest["sources"].append(
            {"file": name, "rgb": rgb_name, "pil_mode": img.mode, "lossy": lossy, "note": note}
        )

    def add_resize(source, width, height, filt="bicubic"):
        rgb_name, rgb = rgb_files[source]
        out = rgb.resize((width, height), FILTERS[filt], reducing_gap=None)
        out_name = f"{rgb_name.removesuffix('.png')}.{width}x{height}.{filt}.png"
        out.save(OUT / out_name, optimize=True)
        manifest["resize"].append(
            {"input": rgb_name, "width": width, "height": height, "filter": int(FILTERS[filt]), "expected": out_name}
        )

    # Downscale by a different non-integer factor on each axis, for every source.
    for name in rgb_files:
        if name != "tiny.png":
            add_resize(name, 37, 29)
    # The resampler's special paths on one photo: strong downscale, one axis only (the other
    # pass is skipped), almost-identity (scale just above 1), a 1-pixel output, other filters.
    for w, h in [(53, 41), (23, 9), (100, 13), (17, 80), (1, 1), (100, 1)]:
        add_resize("astronaut.png", w, h)
    # Pillow 13 runs the vertical pass first iff the height loses more than twice as many pixels
    # as the width: from 72x48, 62x28 is on the boundary (horizontal first), 62x27 and 62x12 go
    # vertical first.
    for w, h in [(62, 28), (62, 27), (62, 12)]:
        add_resize("chelsea.webp", w, h)
    for filt in ["bilinear", "lanczos", "box", "hamming"]:
        add_resize("astronaut.png", 37, 29, filt)
    # Upscaling (support not widened) from a 23x17 crop, incl. one axis only and mixed up/down.
    for w, h in [(61, 45), (50, 17), (23, 40), (96, 9), (1, 80), (22, 16)]:
        add_resize("tiny.png", w, h)
    add_resize("tiny.png", 61, 45, "lanczos")
    add_resize("camera_gray.png", 60, 91)

    # End-to-end pixel_values with BLIP's mean/std (a small size keeps the fixture small).
    height, width = 16, 24
    for name in ["astronaut.png", "logo_rgba.png", "camera_gray16.png"]:
        values = pixel_values(rgb_files[name][1], height, width)
        check_against_transformers(OUT / name, values, height, width)
        out_name = f"{name}.{height}x{width}.pixel_values.f32"
        (OUT / out_name).write_bytes(values.astype("<f4").tobytes())
        manifest["pixel_values"].append(
            {
                "source": name,
                "height": height,
                "width": width,
                "image_mean": BLIP_MEAN,
                "image_std": BLIP_STD,
                "rescale_factor": RESCALE,
                "file": out_name,
            }
        )

    # One entry per line: readable in a diff, and small.
    lines = [f' "pil_version": {json.dumps(manifest["pil_version"])}']
    for key in ["sources", "resize", "pixel_values"]:
        items = ",\n".join("  " + json.dumps(item) for item in manifest[key])
        lines.append(f' "{key}": [\n{items}\n ]')
    (OUT / "manifest.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB, to {OUT}")


def check_against_transformers(path, values, height, width):
    """Confirm the numpy re-implementation equals transformers' own PIL-backend output."""
    if importlib.util.find_spec("transformers") is None:
        print("transformers not installed: pixel_values not cross-checked")
        return
    try:
        from transformers import BlipImageProcessorPil
    except ImportError as e:  # transformers < 5 has no PIL backend class
        print(f"transformers without BlipImageProcessorPil ({e}): not cross-checked")
        return
    proc = BlipImageProcessorPil(size={"height": height, "width": width})
    got = proc(Image.open(path), return_tensors="np")["pixel_values"][0]
    if got.shape != values.shape or not np.array_equal(got, values):
        raise SystemExit(f"{path.name}: numpy pixel_values differ from transformers' (max {np.abs(got - values).max()})")
    print(f"{path.name}: pixel_values identical to transformers.BlipImageProcessorPil")


if __name__ == "__main__":
    main()
