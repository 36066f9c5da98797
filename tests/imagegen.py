"""Photo-like test images, generated (tests never download anything).

Each seed gives a different scene: a smooth colour field, a horizon, a dozen shapes of several
sizes, mid-frequency texture and grain, so the network sees edges, blobs and texture at every scale.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def synthetic_photo(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    im = Image.fromarray(field, "RGB").resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    horizon = int(height * rng.uniform(0.3, 0.7))
    ground = tuple(int(c) for c in rng.integers(0, 200, 3))
    draw.polygon(
        [(0, horizon), (width, horizon + int(rng.integers(-height // 6, height // 6))), (width, height), (0, height)],
        fill=ground,
    )
    for _ in range(int(rng.integers(10, 18))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * width
        kind = rng.integers(0, 4)
        box = [x - r, y - r * rng.uniform(0.4, 1.2), x + r, y + r * rng.uniform(0.4, 1.2)]
        if kind == 0:
            draw.ellipse(box, fill=color)
        elif kind == 1:
            draw.rectangle(box, fill=color)
        elif kind == 2:
            pts = [(x + r * np.cos(a), y + r * np.sin(a)) for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
            draw.polygon(pts, fill=color)
        else:
            draw.line(
                [(x, y), (x + rng.uniform(-2, 2) * r, y + rng.uniform(-2, 2) * r)], fill=color, width=int(r / 6) + 2
            )
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    texture = rng.normal(0, 18, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    texture = (
        np.asarray(
            Image.fromarray(np.clip(texture + 128, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC),
            dtype=np.float32,
        )
        - 128
    )
    grain = rng.normal(0, 6, (height, width, 3))
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
