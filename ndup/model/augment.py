"""Random edits for self-supervised training, on float image tensors (3, H, W) in [0, 1].

`copy_edit` makes what a photo library collects from one picture (crops, small rotations, right-angle
turns and mirrors, resizes, borders, colour and exposure edits, blur, noise, overlays, JPEG
re-encodes); `similar_shot` imitates a second capture of the same scene (a moved viewpoint, things
that moved, different sensor noise), the hard negatives that must never be called copies.
Every function takes an explicit numpy Generator, so a seed reproduces the training set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ndup.model.align import dihedral

SIDE = 256  # what the scan hands the model (decode.MODEL_SIDE)


def squash(x: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """Resize to side x side ignoring aspect, exactly like the scan's decoder does."""
    return F.interpolate(x[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def crop_box(rng: np.random.Generator, area: float, aspect_jitter: float = 1.33) -> tuple[float, float, float, float]:
    """A random box keeping `area` of the image: (x0, y0, x1, y1) as fractions of width and height."""
    ar = math.exp(_u(rng, -math.log(aspect_jitter), math.log(aspect_jitter)))
    w = min(1.0, math.sqrt(area * ar))
    h = min(1.0, math.sqrt(area / ar))
    x0 = _u(rng, 0, 1 - w)
    y0 = _u(rng, 0, 1 - h)
    return x0, y0, x0 + w, y0 + h


def apply_crop(x: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    _, h, w = x.shape
    x0, y0, x1, y1 = box
    top, left = round(y0 * h), round(x0 * w)
    return x[:, top : max(top + 8, round(y1 * h)), left : max(left + 8, round(x1 * w))]


def rotate_small(x: torch.Tensor, angle_deg: float, straighten: bool, fill: float) -> torch.Tensor:
    """Rotate counter-clockwise; `straighten` crops to the largest border-free centred box, as editors do."""
    y = TF.rotate(x, angle_deg, interpolation=TF.InterpolationMode.BILINEAR, expand=not straighten, fill=[fill] * 3)
    if straighten:
        _, h, w = x.shape
        t = math.radians(abs(angle_deg))
        s = 1 / (math.cos(t) + max(w / h, h / w) * math.sin(t))
        ch, cw = max(8, int(h * s)), max(8, int(w * s))
        y = TF.center_crop(y, [ch, cw])
    return y


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return TF.jpeg(u8, quality=int(quality)).float() / 255


def overlay(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A watermark-like mark: a few semi-transparent bars and blocks in one corner region or the centre."""
    _, h, w = x.shape
    y = x.clone()
    cx, cy = _u(rng, 0.1, 0.9) * w, _u(rng, 0.1, 0.9) * h
    colour = torch.tensor(rng.uniform(0, 1, 3), dtype=x.dtype)[:, None, None]
    alpha = _u(rng, 0.35, 1.0)
    for _ in range(int(rng.integers(2, 7))):
        bw, bh = _u(rng, 0.01, 0.12) * w, _u(rng, 0.01, 0.05) * h
        ox, oy = cx + _u(rng, -0.12, 0.12) * w, cy + _u(rng, -0.04, 0.04) * h
        x0, x1 = int(max(0, ox - bw)), int(min(w, ox + bw))
        y0, y1 = int(max(0, oy - bh)), int(min(h, oy + bh))
        if x1 > x0 and y1 > y0:
            y[:, y0:y1, x0:x1] = (1 - alpha) * y[:, y0:y1, x0:x1] + alpha * colour
    return y


def photometric(x: torch.Tensor, rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    if rng.random() < 0.35 * strength:
        x = TF.adjust_brightness(x, _u(rng, 0.6, 1.5))
    if rng.random() < 0.3 * strength:
        x = TF.adjust_contrast(x, _u(rng, 0.6, 1.5))
    if rng.random() < 0.3 * strength:
        x = TF.adjust_saturation(x, _u(rng, 0.0, 2.0))
    if rng.random() < 0.15 * strength:
        x = TF.adjust_hue(x, _u(rng, -0.08, 0.08))
    if rng.random() < 0.2 * strength:
        x = TF.adjust_gamma(x.clamp(0, 1), _u(rng, 0.6, 1.6))
    if rng.random() < 0.08 * strength:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if rng.random() < 0.15 * strength:
        sigma = _u(rng, 0.5, 2.5)
        k = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x, [k, k], [sigma, sigma])
    if rng.random() < 0.1 * strength:
        x = TF.adjust_sharpness(x, _u(rng, 2.0, 4.0))
    if rng.random() < 0.15 * strength:
        x = x + torch.from_numpy(rng.normal(0, _u(rng, 0.01, 0.05), x.shape).astype(np.float32))
    return x.clamp(0, 1)


def random_crop(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    return apply_crop(x, crop_box(rng, _u(rng, 0.4, 0.95)))


def random_tilt(x: torch.Tensor, rng: np.random.Generator, lo: float, hi: float) -> torch.Tensor:
    """Rotate by lo..hi degrees either way, straightened (cropped) or with a black or white fill."""
    angle = _u(rng, lo, hi) * (1 if rng.random() < 0.5 else -1)
    return rotate_small(x, angle, straighten=rng.random() < 0.6, fill=float(rng.choice([0.0, 1.0])))


def random_border(x: torch.Tensor, rng: np.random.Generator, lo: float) -> torch.Tensor:
    pad = int(min(x.shape[1:]) * _u(rng, lo, 0.12))
    return TF.pad(x, [pad], fill=float(rng.uniform(0, 1)))


def random_downscale(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    s = _u(rng, 0.15, 0.8)
    return TF.resize(x, [max(16, int(x.shape[1] * s)), max(16, int(x.shape[2] * s))], antialias=True)


def random_turn(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One of the 7 right-angle turns and mirrors (works on any shape: rot90 swaps the sides)."""
    return dihedral(x[None], int(rng.integers(1, 8)))[0]


def copy_edit(x: torch.Tensor, rng: np.random.Generator, *, right_angles: bool = True) -> torch.Tensor:
    """A random copy of a picture, at its own size (`squash` it to see it as the model does)."""
    if rng.random() < 0.45:
        x = random_crop(x, rng)
    if rng.random() < 0.3:
        x = random_tilt(x, rng, 2, 20)
    if rng.random() < 0.08:
        x = random_border(x, rng, 0.03)
    if rng.random() < 0.5:  # lower resolution: the squash below then upsamples or keeps it
        x = random_downscale(x, rng)
    x = photometric(x, rng)
    if rng.random() < 0.15:
        x = overlay(x, rng)
    if rng.random() < 0.5:
        x = jpeg(x, int(rng.integers(20, 92)))
    if right_angles and rng.random() < 0.5:
        x = random_turn(x, rng)
    return x.clamp(0, 1)


def library_copy(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A copy as photo libraries hold them: one to three edits (an export, a crop, a straightened
    picture, a filter, a screenshot, a re-share), not the pile-up of `copy_edit`.

    `copy_edit` trains the embedding to be robust; these train the decision unit, which must learn
    what a copy looks like, not what the heaviest possible copy looks like."""
    edits = {
        "crop": random_crop,
        "rotate": lambda x, rng: random_tilt(x, rng, 1, 16),
        "border": lambda x, rng: random_border(x, rng, 0.02),
        "resize": random_downscale,
        "photo": lambda x, rng: photometric(x, rng, strength=2.0),
        "gray": lambda x, rng: TF.rgb_to_grayscale(x, num_output_channels=3),
        "overlay": overlay,
        "jpeg": lambda x, rng: jpeg(x, int(rng.integers(20, 95))),
        "turn": random_turn,
    }
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    for edit in rng.choice(list(edits), n, replace=False):
        x = edits[edit](x, rng)
    return x.clamp(0, 1)


def similar_shot(x: torch.Tensor, rng: np.random.Generator, tripod: float = 0.4) -> torch.Tensor:
    """Another capture of the same scene (viewpoint moved, parts of the scene moved, fresh noise), at its own size.

    `tripod`: the share of re-takes from (nearly) the same viewpoint. The decision unit trains with none:
    a still scene shot twice from a tripod is, in pixels, a copy; capture metadata finds those (bursts)."""
    _, h, w = x.shape
    # viewpoint: from a tripod (nearly none) to a hand-held re-take (a clear perspective change)
    d = _u(rng, 0.003, 0.03) if rng.random() < tripod else _u(rng, 0.03, 0.12)
    start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
    end = [[px + _u(rng, -d, d) * w, py + _u(rng, -d, d) * h] for px, py in start]
    x = TF.perspective(x, start, end, interpolation=TF.InterpolationMode.BILINEAR, fill=[0.0] * 3)
    margin = d + 0.02
    x = apply_crop(x, (margin, margin, 1 - margin, 1 - margin))
    _, h, w = x.shape
    # things that moved: shift a few patches
    x = x.clone()
    for _ in range(int(rng.integers(1, 4))):
        ph, pw = int(h * _u(rng, 0.12, 0.35)), int(w * _u(rng, 0.12, 0.35))
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        dy, dx = int(_u(rng, -0.08, 0.08) * h), int(_u(rng, -0.08, 0.08) * w)
        y1, x1 = min(max(0, y0 + dy), h - ph), min(max(0, x0 + dx), w - pw)
        x[:, y1 : y1 + ph, x1 : x1 + pw] = x[:, y0 : y0 + ph, x0 : x0 + pw].clone()
    # parallax: a smooth displacement field
    if rng.random() < 0.6:
        disp = torch.from_numpy(rng.normal(0, 1, (1, 2, 4, 4)).astype(np.float32)) * _u(rng, 0.01, 0.04)
        disp = F.interpolate(disp, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
        grid = F.affine_grid(torch.eye(2, 3)[None], [1, 3, h, w], align_corners=False)[0] + disp
        x = F.grid_sample(x[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
    # a different exposure and fresh sensor noise
    x = TF.adjust_gamma(x.clamp(0, 1), _u(rng, 0.85, 1.18))
    x = x + torch.from_numpy(rng.normal(0, _u(rng, 0.005, 0.025), x.shape).astype(np.float32))
    if rng.random() < 0.5:
        x = jpeg(x, int(rng.integers(60, 95)))
    return x.clamp(0, 1)
