"""Captures: which files one press of the shutter made, and which presses were one burst. Pure.

A burst is photos from one camera taken within a few seconds of each other: they look alike, but
each is a different photo, so they are reported as a `similar` group (the sharpest, best-exposed
one proposed as the pick) and never as copies. Copies of one photo (exports, re-encodes) keep its
capture time, so two files with the same camera and the same capture time are one capture.
A RAW file and the JPEG the camera wrote beside it (same name stem, same capture time) are an
intended pair: never duplicates of each other, whatever their pixels say.
"""

from __future__ import annotations

import datetime
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ndup.records import ImageRecord, PairVerdict

if TYPE_CHECKING:  # numpy is not imported at run time: the CLI imports this module for its defaults
    import numpy as np

# Photos from one camera at most this many seconds apart can be a burst.
BURST_SECONDS = 2.0
# The embedding cosine above which two burst frames look alike enough to be offered together.
BURST_SIMILARITY = 0.80

_EPOCH = datetime.datetime(1970, 1, 1)


def _parse(ts: str | None) -> datetime.datetime | None:
    if not ts:
        return None
    try:
        return datetime.datetime.fromisoformat(ts)
    except ValueError:
        return None


def wall_clock(ts: str | None) -> float | None:
    """Seconds since 1970 of the camera clock's reading, ignoring any UTC offset (one camera, one clock)."""
    when = _parse(ts)
    return (when.replace(tzinfo=None) - _EPOCH).total_seconds() if when else None


def capture_epoch(ts: str | None) -> float | None:
    """The capture time as a Unix time: exact when the file records its UTC offset, else read as local time."""
    when = _parse(ts)
    return when.timestamp() if when else None


def _has_fraction(ts: str) -> bool:
    return "." in ts


def same_capture(a: str | None, b: str | None) -> bool:
    """Two capture times of one shutter press: equal, or equal to the second when one lacks fractions."""
    wa, wb = wall_clock(a), wall_clock(b)
    if wa is None or wb is None:
        return False
    if wa == wb:
        return True
    if _has_fraction(a) and _has_fraction(b):
        return False
    return int(wa) == int(wb)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0].lower()


def capture_pairs(
    images: Sequence[ImageRecord], burst_seconds: float = BURST_SECONDS
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(burst pairs, RAW+JPEG pairs) as index pairs (i < j) into `images`.

    Burst: the same camera (make and model known), capture times known, different captures at most
    `burst_seconds` apart. RAW+JPEG: the same name stem and the same capture, one RAW and one not.
    """
    by_camera: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, im in enumerate(images):
        camera, seconds = im.facts.camera, wall_clock(im.facts.capture_time)
        if camera and seconds is not None:
            by_camera[camera.lower()].append((seconds, i))
    bursts: set[tuple[int, int]] = set()
    pairs: set[tuple[int, int]] = set()
    for shots in by_camera.values():
        shots.sort()
        for x, (t, i) in enumerate(shots):
            for t2, j in shots[x + 1 :]:
                if t2 - t > burst_seconds:
                    break
                a, b = images[i].facts, images[j].facts
                key = (min(i, j), max(i, j))
                if not same_capture(a.capture_time, b.capture_time):
                    bursts.add(key)
                elif (a.format == "RAW") != (b.format == "RAW") and _stem(images[i].path) == _stem(images[j].path):
                    pairs.add(key)
    return bursts, pairs


def apply_captures(
    images: Sequence[ImageRecord],
    vectors: np.ndarray,
    verdicts: Sequence[PairVerdict],
    *,
    burst_seconds: float = BURST_SECONDS,
    burst_similarity: float = BURST_SIMILARITY,
) -> list[PairVerdict]:
    """Verdicts with captures taken into account.

    A burst pair is `similar` (never a copy) when the verifier matched it at any tier or its
    embedding cosine (`vectors` are L2-normalised rows) reaches `burst_similarity`; otherwise it is
    no match. A RAW+JPEG pair is no match at all. Other verdicts pass through unchanged.
    """
    bursts, raw_jpeg = capture_pairs(images, burst_seconds)
    out: list[PairVerdict] = []
    matched: set[tuple[int, int]] = set()
    for v in verdicts:
        key = (min(v.a, v.b), max(v.a, v.b))
        if key in raw_jpeg:
            continue
        if key in bursts:
            if v.tier is not None:  # no match: the burst's own threshold decides below
                matched.add(key)
                out.append(PairVerdict(v.a, v.b, "similar", v.score, v.similarity))
            continue
        out.append(v)
    for a, b in sorted(bursts - matched):
        cosine = float(vectors[a] @ vectors[b])
        if cosine >= burst_similarity:
            out.append(PairVerdict(a, b, "similar", cosine, cosine))
    return out
