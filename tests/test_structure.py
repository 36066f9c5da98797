"""The pixel check on aligned thumbnails (ndup.structure): where one picture fits inside the other."""

from __future__ import annotations

import numpy as np
from imagegen import synthetic_photo
from PIL import Image

from ndup.structure import THUMB_LONG_SIDE, _Canvas, prepare, structure_match


def thumb(im: Image.Image) -> np.ndarray:
    w, h = im.size
    s = THUMB_LONG_SIDE / max(w, h)
    return prepare(np.asarray(im.convert("L").resize((max(12, round(w * s)), max(12, round(h * s))), Image.BOX)))


def test_the_canvas_correlation_is_normalised_cross_correlation_at_every_offset():
    rng = np.random.default_rng(3)
    big = rng.uniform(0, 255, (23, 31))
    tpl = rng.uniform(0, 255, (9, 14))
    canvas = _Canvas(big)
    for template in (tpl, big[5:14, 7:21] * 0.5 + 20):  # the second is in there, re-toned: 1.0 at (5, 7)
        got = canvas.ncc_map(template)
        t = template - template.mean()
        want = np.empty((23 - 9 + 1, 31 - 14 + 1))
        for y in range(want.shape[0]):
            for x in range(want.shape[1]):
                w = big[y : y + 9, x : x + 14]
                w = w - w.mean()
                want[y, x] = (w * t).sum() / np.sqrt((w**2).sum() * (t**2).sum())
        np.testing.assert_allclose(got, want, atol=1e-9)
    assert np.unravel_index(np.argmax(got), got.shape) == (5, 7) and got[5, 7] > 0.999999


def test_a_crop_fits_inside_its_original_and_an_unrelated_picture_nowhere():
    original = synthetic_photo(21, 640, 480)
    crop = original.crop((100, 60, 540, 390))  # 69% of the width: one of the scales searched, roughly
    other = synthetic_photo(22, 640, 480)
    score, worst, scale = structure_match(thumb(original), thumb(crop))
    assert score > 0.95 and worst > 0.85 and 0.6 < scale < 0.8, (score, worst, scale)
    assert structure_match(thumb(crop), thumb(original))[0] == score  # both ways round are searched
    assert structure_match(thumb(original), thumb(other))[0] < 0.8


def test_something_moved_shows_in_the_worst_block_not_the_best_fit():
    original = synthetic_photo(23, 640, 480)
    moved = original.copy()
    moved.paste(original.crop((40, 40, 200, 180)).transpose(Image.Transpose.ROTATE_180), (40, 40))
    score, worst, _ = structure_match(thumb(original), thumb(moved))
    assert score > 0.8 and worst < 0.6, (score, worst)
