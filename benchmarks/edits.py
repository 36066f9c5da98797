"""Edits a photo library collects, applied with Pillow to real files for the benchmarks.

These are written independently of the training augmentations (ndup/model/augment.py, torch), and
include kinds training never sees (text overlays, letterboxing, EXIF-rotated files, format changes).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps


def _jpeg(im: Image.Image, q: float) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=int(q))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def crop_area(im: Image.Image, rng: np.random.Generator, area: float) -> Image.Image:
    w, h = im.size
    ar = rng.uniform(0.8, 1.25)
    cw = min(w, round(w * math.sqrt(area * ar)))
    ch = min(h, round(h * math.sqrt(area / ar)))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch))


def rot_small(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = rng.uniform(5, 15) * rng.choice([-1, 1])
    if rng.random() < 0.5:  # "straighten": rotate, then crop the largest centred box without borders
        r = im.rotate(a, resample=Image.BICUBIC, expand=False)
        w, h = im.size
        t = math.radians(abs(a))
        s = 1 / (math.cos(t) + max(w / h, h / w) * math.sin(t))
        cw, ch = int(w * s), int(h * s)
        return r.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return im.rotate(a, resample=Image.BICUBIC, expand=True, fillcolor=(255, 255, 255))


def text_overlay(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    im = im.copy()
    d = ImageDraw.Draw(im)
    w, h = im.size
    size = max(12, int(h * rng.uniform(0.05, 0.1)))
    font = ImageFont.load_default(size=size)
    text = str(rng.choice(["(c) 2021 J. Smith", "SAMPLE", "Holiday 2019", "www.example.org"]))
    x, y = int(rng.uniform(0.02, 0.5) * w), int(rng.uniform(0.02, 0.85) * h)
    d.text((x, y), text, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), font=font)
    return im


def border(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    p = int(min(im.size) * rng.uniform(0.03, 0.1))
    return ImageOps.expand(im, border=p, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))


def letterbox(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A screenshot-like copy: scaled into a 16:9 black canvas."""
    w, h = im.size
    cw = int(max(w, h * 16 / 9) * rng.uniform(0.5, 0.8))
    ch = int(cw * 9 / 16)
    s = min(cw / w, ch / h)
    small = im.resize((max(1, int(w * s)), max(1, int(h * s))), Image.LANCZOS)
    canvas = Image.new("RGB", (cw, ch), (0, 0, 0))
    canvas.paste(small, ((cw - small.width) // 2, (ch - small.height) // 2))
    return canvas


def noise(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(5, 12), (im.height, im.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def combo(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    small = crop_area(im, rng, 0.85).resize((im.width // 2, im.height // 2), Image.LANCZOS)
    return _jpeg(ImageEnhance.Brightness(small).enhance(rng.uniform(0.8, 1.2)), rng.uniform(40, 80))


# kind -> (edit, file format to save as)
# Bump when an edit changes: benchmark folders built by an older version are then rebuilt.
EDITS_VERSION = 1

EDITS = {
    "jpeg": (lambda im, r: _jpeg(im, r.uniform(20, 50)), "JPEG"),
    "resize": (lambda im, r: im.resize((max(32, int(im.width * (s := r.uniform(0.25, 0.6)))), max(32, int(im.height * s))), Image.LANCZOS), "JPEG"),
    "crop75": (lambda im, r: crop_area(im, r, 0.75), "JPEG"),
    "crop50": (lambda im, r: crop_area(im, r, 0.5), "JPEG"),
    "rot90": (lambda im, r: im.transpose(Image.Transpose.ROTATE_90), "JPEG"),
    "rot180": (lambda im, r: im.transpose(Image.Transpose.ROTATE_180), "JPEG"),
    "rot270": (lambda im, r: im.transpose(Image.Transpose.ROTATE_270), "JPEG"),
    "mirror": (lambda im, r: ImageOps.mirror(im), "JPEG"),
    "mirror_rot90": (lambda im, r: im.transpose(Image.Transpose.TRANSPOSE), "JPEG"),
    "rot_small": (rot_small, "JPEG"),
    "bright": (lambda im, r: ImageEnhance.Brightness(im).enhance(r.choice([r.uniform(0.6, 0.8), r.uniform(1.2, 1.5)])), "JPEG"),
    "contrast": (lambda im, r: ImageEnhance.Contrast(im).enhance(r.choice([r.uniform(0.6, 0.8), r.uniform(1.2, 1.6)])), "JPEG"),
    "color": (lambda im, r: ImageEnhance.Color(im).enhance(r.choice([r.uniform(0.3, 0.7), r.uniform(1.3, 2.0)])), "JPEG"),
    "gray": (lambda im, r: ImageOps.grayscale(im).convert("RGB"), "JPEG"),
    "blur": (lambda im, r: im.filter(ImageFilter.GaussianBlur(r.uniform(1.0, 2.5))), "JPEG"),
    "sharpen": (lambda im, r: im.filter(ImageFilter.UnsharpMask(radius=2, percent=int(r.uniform(100, 250)))), "JPEG"),
    "noise": (noise, "JPEG"),
    "text": (text_overlay, "JPEG"),
    "border": (border, "JPEG"),
    "letterbox": (letterbox, "PNG"),
    "webp": (lambda im, r: im, "WEBP"),
    "png": (lambda im, r: im.resize((im.width // 2, im.height // 2), Image.LANCZOS), "PNG"),
    "combo": (combo, "JPEG"),
    "exif_rotated": (lambda im, r: im, "EXIF"),  # stored on its side with an Orientation tag
}  # fmt: skip


def _perspective_coeffs(src, dst):
    """Coefficients for Image.transform(PERSPECTIVE) mapping output points dst to input points src."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, float), np.array(rhs, float)).tolist()


def similar_shot(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another capture of the same scene: the camera moved a little, things in it moved, new noise."""
    w, h = im.size
    d = rng.uniform(0.03, 0.1)
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(x + rng.uniform(-d, d) * w, y + rng.uniform(-d, d) * h) for x, y in corners]
    frame = im.transform((w, h), Image.PERSPECTIVE, _perspective_coeffs(moved, corners), Image.BICUBIC)
    m = int(min(w, h) * (d + 0.02))
    frame = frame.crop((m, m, w - m, h - m))
    fw, fh = frame.size
    for _ in range(int(rng.integers(1, 4))):  # a few things moved
        pw, ph = int(fw * rng.uniform(0.1, 0.3)), int(fh * rng.uniform(0.1, 0.3))
        x0, y0 = int(rng.integers(0, fw - pw)), int(rng.integers(0, fh - ph))
        patch = frame.crop((x0, y0, x0 + pw, y0 + ph))
        dx, dy = int(rng.uniform(-0.08, 0.08) * fw), int(rng.uniform(-0.08, 0.08) * fh)
        frame.paste(patch, (min(max(0, x0 + dx), fw - pw), min(max(0, y0 + dy), fh - ph)))
    a = np.asarray(frame, np.float32) / 255
    a = a ** rng.uniform(0.85, 1.15) + rng.normal(0, rng.uniform(0.005, 0.02), a.shape)
    return Image.fromarray(np.clip(a * 255, 0, 255).astype(np.uint8))


def save_edit(im: Image.Image, fmt: str, path_stem) -> str:
    """Save in the kind's format; returns the file name written."""
    if fmt == "EXIF":
        exif = Image.Exif()
        exif[0x0112] = 6  # the camera stored it on its side; viewers turn it upright
        name = f"{path_stem}.jpg"
        im.transpose(Image.Transpose.ROTATE_90).save(name, "JPEG", quality=90, exif=exif.tobytes())
        return name
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    name = f"{path_stem}.{ext}"
    params = {"quality": 88} if fmt in ("JPEG", "WEBP") else {}
    im.convert("RGB").save(name, fmt, **params)
    return name
