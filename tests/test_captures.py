"""Bursts and RAW+JPEG pairs: which files are one capture, which captures are one burst."""

import numpy as np
import pytest

from ndup.captures import apply_captures, capture_pairs, same_capture, wall_clock
from ndup.records import ImageFacts, ImageRecord, PairVerdict


def shot(path, when, camera=("Ndup", "TestCam 1"), fmt="JPEG", content=None):
    make, model = camera if camera else (None, None)
    f = ImageFacts(content or path, fmt, 4000, 3000, "0" * 16, "0" * 16, camera_make=make, camera_model=model,
                   capture_time=when, subtype="CR2" if fmt == "RAW" else None)  # fmt: skip
    return ImageRecord(path, 1000, 0, f)


@pytest.mark.parametrize(
    "a,b,same",
    [
        ("2023-07-14T10:22:05.120", "2023-07-14T10:22:05.120", True),
        ("2023-07-14T10:22:05.120+02:00", "2023-07-14T10:22:05.120", True),  # an export that lost the offset
        ("2023-07-14T10:22:05.120", "2023-07-14T10:22:05", True),  # ... or the fraction
        ("2023-07-14T10:22:05.120", "2023-07-14T10:22:05.450", False),  # two frames in one second
        ("2023-07-14T10:22:05", "2023-07-14T10:22:06", False),
        (None, "2023-07-14T10:22:05", False),
    ],
)
def test_same_capture(a, b, same):
    assert same_capture(a, b) is same


def test_wall_clock_ignores_the_offset():
    assert wall_clock("2023-07-14T10:22:05.5+02:00") == wall_clock("2023-07-14T10:22:05.5") == 1689330125.5
    assert wall_clock("not a time") is None and wall_clock(None) is None


def test_bursts_need_one_camera_different_captures_within_the_window():
    images = [
        shot("/b/1.jpg", "2023-07-14T10:22:05.10"),
        shot("/b/2.jpg", "2023-07-14T10:22:05.60"),
        shot("/b/3.jpg", "2023-07-14T10:22:07.00"),  # 1.4 s after 2, 1.9 s after 1
        shot("/b/4.jpg", "2023-07-14T10:22:09.50"),  # 2.5 s after 3: a new moment
        shot("/b/other.jpg", "2023-07-14T10:22:05.30", camera=("Ndup", "Other")),
        shot("/b/nocam.jpg", "2023-07-14T10:22:05.30", camera=None),
        shot("/b/1_export.jpg", "2023-07-14T10:22:05.10"),  # same capture as 1: a copy, not a burst
    ]
    bursts, pairs = capture_pairs(images, burst_seconds=2.0)
    assert bursts == {(0, 1), (0, 2), (1, 2), (1, 6), (2, 6)}
    assert pairs == set()


def test_raw_jpeg_pairs_need_the_same_stem_and_capture():
    images = [
        shot("/c/IMG_1.CR2", "2023-07-14T10:22:05", fmt="RAW"),
        shot("/c/IMG_1.JPG", "2023-07-14T10:22:05"),
        shot("/c/jpg/img_1.jpg", "2023-07-14T10:22:05"),  # same stem, another folder: still the pair
        shot("/c/IMG_2.CR2", "2023-07-14T10:22:05", fmt="RAW"),  # same time, other stem: not a pair
        shot("/c/IMG_9.JPG", "2023-07-14T10:30:00"),
        shot("/c/IMG_9.CR2", "2023-07-14T11:00:00", fmt="RAW"),  # same stem, another capture
    ]
    bursts, pairs = capture_pairs(images)
    assert pairs == {(0, 1), (0, 2)}
    assert bursts == set()


def test_apply_captures_turns_bursts_similar_and_drops_raw_jpeg_verdicts():
    images = [
        shot("/d/1.jpg", "2023-07-14T10:22:05.10"),
        shot("/d/2.jpg", "2023-07-14T10:22:05.60"),
        shot("/d/3.jpg", "2023-07-14T10:22:06.10"),
        shot("/d/IMG_1.CR2", "2023-07-14T12:00:00", fmt="RAW"),
        shot("/d/IMG_1.JPG", "2023-07-14T12:00:00"),
        shot("/d/x.jpg", None),
        shot("/d/y.jpg", None),
    ]
    v = np.eye(7, dtype=np.float32)
    v[2] = v[0] * 0.9 + v[2] * np.sqrt(1 - 0.81)  # frame 3 looks like frame 1 (cosine 0.9), no verdict yet
    verdicts = [
        PairVerdict(0, 1, "copy", 0.97, 0.97),  # the verifier took two burst frames for copies
        PairVerdict(3, 4, "copy", 0.95, 0.95),  # RAW and its JPEG
        PairVerdict(5, 6, "copy", 0.96, 0.96),  # no capture facts: untouched
    ]
    out = apply_captures(images, v, verdicts, burst_seconds=2.0, burst_similarity=0.8)
    assert sorted((x.a, x.b, x.tier) for x in out) == [(0, 1, "similar"), (0, 2, "similar"), (5, 6, "copy")]
    loose = apply_captures(images, v, verdicts, burst_seconds=2.0, burst_similarity=0.95)
    assert (0, 2) not in {(x.a, x.b) for x in loose}
