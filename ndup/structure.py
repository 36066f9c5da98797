"""Pixel-level verification of a candidate pair: does one aligned picture reappear inside the other?

Global descriptors cannot tell a crop of a photo (a copy) from a second shot of the same scene (not a
copy): the second shot often looks *more* alike. What separates them is structure: a copy, once
aligned, matches its original pixel for pixel (up to exposure and compression), at some scale and
offset; a second capture does not (the camera moved, things in the scene moved).

Each image keeps a small greyscale thumbnail of its aligned view, in its true proportions. For a pair
we search the scale and offset at which the smaller-looking one best fits inside the other
(normalised cross-correlation, so brightness and contrast edits do not matter), then look at the
worst-matching block at that fit: something that moved leaves one block that does not match.
Pure numpy.
"""

from __future__ import annotations

import numpy as np

THUMB_LONG_SIDE = 64
SCALES = (1.0, 0.86, 0.74, 0.63, 0.54)  # how much of the other picture a crop may span (linear)
SLACK = 3  # pixels of shift tolerated around a full-frame fit
BLOCKS = 3  # the template is split into BLOCKS x BLOCKS for the worst-block check
FLAT_STD = 4.0  # a block this flat (grey levels) says nothing and is skipped


def encode(thumb: np.ndarray) -> bytes:
    h, w = thumb.shape
    return bytes([h, w]) + np.ascontiguousarray(thumb, dtype=np.uint8).tobytes()


def decode(blob: bytes) -> tuple[np.ndarray, bytes]:
    """One thumbnail from the front of `blob`, and what follows it."""
    h, w = blob[0], blob[1]
    end = 2 + h * w
    return np.frombuffer(blob[2:end], dtype=np.uint8).reshape(h, w), blob[end:]


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-average downscale (or bilinear for the rare upscale) without an outside library."""
    ih, iw = img.shape
    ys = (np.arange(h) + 0.5) * ih / h - 0.5
    xs = (np.arange(w) + 0.5) * iw / w - 0.5
    y0 = np.clip(np.floor(ys).astype(int), 0, ih - 1)
    x0 = np.clip(np.floor(xs).astype(int), 0, iw - 1)
    y1, x1 = np.clip(y0 + 1, 0, ih - 1), np.clip(x0 + 1, 0, iw - 1)
    fy, fx = np.clip(ys - y0, 0, 1)[:, None], np.clip(xs - x0, 0, 1)[None, :]
    if h < ih or w < iw:  # smooth first so that downscaling does not alias
        k = max(ih / h, iw / w)
        img = _box_blur(img, max(1, round(k)))
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _box_blur(img: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return img
    pad = np.pad(img, ((k // 2, k - 1 - k // 2), (k // 2, k - 1 - k // 2)), mode="edge")
    c = np.cumsum(np.cumsum(np.pad(pad, ((1, 0), (1, 0))), 0), 1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


class _Canvas:
    """A picture that templates are fitted inside: its spectrum and running sums, computed once for
    all the scales tried (they depend on it alone)."""

    def __init__(self, big: np.ndarray):
        self.big = big
        self.spectrum = np.fft.rfft2(big, big.shape)
        self.c1 = np.pad(np.cumsum(np.cumsum(big, 0), 1), ((1, 0), (1, 0)))
        self.c2 = np.pad(np.cumsum(np.cumsum(big**2, 0), 1), ((1, 0), (1, 0)))

    def ncc_map(self, tpl: np.ndarray) -> np.ndarray:
        """Normalised cross-correlation of `tpl` at every position where it fits inside the picture (via FFT)."""
        bh, bw = self.big.shape
        th, tw = tpl.shape
        t = tpl - tpl.mean()
        tn = np.sqrt((t**2).sum())
        oh, ow = bh - th + 1, bw - tw + 1
        if tn < 1e-6:
            return np.zeros((oh, ow))
        shape = (bh, bw)
        corr = np.fft.irfft2(self.spectrum * np.conj(np.fft.rfft2(t, shape)), shape)[:oh, :ow]
        c1, c2 = self.c1, self.c2
        s1 = c1[th:, tw:] - c1[:-th, tw:] - c1[th:, :-tw] + c1[:-th, :-tw]
        s2 = c2[th:, tw:] - c2[:-th, tw:] - c2[th:, :-tw] + c2[:-th, :-tw]
        local = np.sqrt(np.maximum(s2 - s1**2 / (th * tw), 1e-6))
        return corr / (local * tn)


def _worst_block(big: np.ndarray, tpl: np.ndarray, y: int, x: int) -> float:
    th, tw = tpl.shape
    region = big[y : y + th, x : x + tw]
    worst = 1.0
    for by in range(BLOCKS):
        for bx in range(BLOCKS):
            ys = slice(by * th // BLOCKS, (by + 1) * th // BLOCKS)
            xs = slice(bx * tw // BLOCKS, (bx + 1) * tw // BLOCKS)
            a, b = tpl[ys, xs], region[ys, xs]
            if a.std() < FLAT_STD and b.std() < FLAT_STD:
                continue
            a, b = a - a.mean(), b - b.mean()
            denom = np.sqrt((a**2).sum() * (b**2).sum())
            worst = min(worst, float((a * b).sum() / denom) if denom > 1e-6 else 0.0)
    return worst


def _fit(canvas: _Canvas, small: np.ndarray, s: float) -> tuple[float, int, int, np.ndarray] | None:
    """Best correlation of `small` scaled to span `s` of the canvas, with its position and the template."""
    bh, bw = canvas.big.shape[0] - 2 * SLACK, canvas.big.shape[1] - 2 * SLACK
    sh, sw = small.shape
    fit = s * min(bh / sh, bw / sw)
    h, w = round(sh * fit), round(sw * fit)
    if h < 12 or w < 12 or h > bh or w > bw:
        return None
    tpl = _resize(small, h, w)
    ncc = canvas.ncc_map(tpl)
    y, x = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return float(ncc[y, x]), int(y), int(x), tpl


def prepare(thumb: np.ndarray) -> np.ndarray:
    """A thumbnail as matching compares it: float, lightly blurred (sub-pixel resampling differences
    between a copy and its original must not count as differences)."""
    return _box_blur(thumb.astype(np.float64), 2)


def structure_match(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(best correlation, worst block correlation at that fit, linear scale of the fit) for two
    prepared thumbnails: a coarse search over scales and both directions, then a finer one."""
    best: tuple[tuple[float, int, int, np.ndarray], float, _Canvas] | None = None  # fit, scale, canvas
    for big, small in ((a, b), (b, a)):
        canvas = _Canvas(np.pad(big, SLACK, mode="edge"))
        tried = {}
        for s in SCALES:
            tried[s] = _fit(canvas, small, s)
        found = [(r[0], s) for s, r in tried.items() if r is not None]
        if not found:
            continue
        _, s0 = max(found)
        for s in (s0 - 0.045, s0 - 0.03, s0 - 0.015, s0 + 0.015, s0 + 0.03, s0 + 0.045):
            if 0.45 <= s <= 1.0:
                tried[s] = _fit(canvas, small, s)
        for s, r in tried.items():  # the first of equal scores wins
            if r is not None and r[0] > (-1.0 if best is None else best[0][0]):
                best = (r, s, canvas)
    if best is None:
        return (-1.0, -1.0, 0.0)
    (score, y, x, tpl), scale, canvas = best
    return (score, _worst_block(canvas.big, tpl, y, x), scale)
