"""Photo-like test images, generated (tests never download anything).

Each seed gives a different scene: a smooth colour field, often a horizon, a few to many shapes
(some striped), blur, texture with its own spectrum and colour, and grain, so the network sees edges,
blobs and texture at every scale, and two seeds differ in style as two real photos do (a generator
whose pictures all share one style makes unrelated test images look alike to a network trained on
real photos).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _spectral_texture(rng, height, width, slope, strength):
    """Noise with a 1/f^slope spectrum: from fine grain (low slope) to cloud-like (high slope)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    out = []
    for _ in range(3):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**slope
        spec[0, 0] = 0
        t = np.fft.irfft2(spec, s=(height, width))
        out.append(t / (t.std() + 1e-9))
    mix = rng.normal(0, 1, (3, 3)) * 0.5 + np.eye(3)  # correlated channels, like real colour
    return np.einsum("ij,jhw->hwi", mix, np.stack(out)) * strength


def synthetic_photo(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    rng = np.random.default_rng(seed)
    gx, gy = int(rng.integers(2, 7)), int(rng.integers(2, 6))
    field = rng.integers(0, 256, (gy, gx, 3), dtype=np.uint8)
    im = Image.fromarray(field, "RGB").resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    if rng.random() < 0.7:
        horizon = int(height * rng.uniform(0.25, 0.75))
        ground = tuple(int(c) for c in rng.integers(0, 220, 3))
        draw.polygon(
            [
                (0, horizon),
                (width, horizon + int(rng.integers(-height // 5, height // 5))),
                (width, height),
                (0, height),
            ],
            fill=ground,
        )
    n_shapes = int(rng.choice([int(rng.integers(3, 8)), int(rng.integers(10, 20)), int(rng.integers(30, 80))]))
    big = rng.uniform(0.08, 0.3)
    for _ in range(n_shapes):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, big) * width
        kind = rng.integers(0, 5)
        box = [x - r, y - r * rng.uniform(0.3, 1.3), x + r, y + r * rng.uniform(0.3, 1.3)]
        if kind == 0:
            draw.ellipse(box, fill=color)
        elif kind == 1:
            draw.rectangle(box, fill=color)
        elif kind == 2:
            pts = [
                (x + r * np.cos(a), y + r * np.sin(a))
                for a in np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
            ]
            draw.polygon(pts, fill=color)
        elif kind == 3:
            draw.line(
                [(x, y), (x + rng.uniform(-2, 2) * r, y + rng.uniform(-2, 2) * r)], fill=color, width=int(r / 6) + 2
            )
        else:  # a striped patch: man-made texture
            step = max(2, int(r / rng.uniform(2, 8)))
            for k in range(int(box[0]), int(box[2]), 2 * step):
                draw.rectangle([k, box[1], k + step, box[3]], fill=color)
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.5)))), dtype=np.float32)
    texture = _spectral_texture(
        rng, height, width, slope=float(rng.uniform(0.6, 1.8)), strength=float(rng.uniform(8, 30))
    )
    grain = rng.normal(0, 5, (height, width, 3))
    return Image.fromarray(np.clip(arr + texture + grain, 0, 255).astype(np.uint8), "RGB")


def camera_exif(
    make: str | None = "Ndup",
    model: str | None = "TestCam 1",
    taken: str | None = "2023:07:14 10:22:05",
    subsec: str | None = None,
    offset: str | None = None,
    lens: str | None = None,
    gps: tuple[float, float] | None = None,
    rating: int | None = None,
    orientation: int | None = None,
) -> Image.Exif:
    """The EXIF a camera writes: make, model, capture time (sub-seconds, UTC offset), lens, GPS, rating."""
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if rating is not None:
        exif[0x4746] = rating
    if orientation:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    for tag, value in ((0x9003, taken), (0x9291, subsec), (0x9011, offset), (0xA434, lens)):
        if value:
            sub[tag] = value
    if gps:
        g = exif.get_ifd(0x8825)
        g[1], g[2] = ("N" if gps[0] >= 0 else "S"), (abs(gps[0]), 0.0, 0.0)
        g[3], g[4] = ("E" if gps[1] >= 0 else "W"), (abs(gps[1]), 0.0, 0.0)
    return exif
