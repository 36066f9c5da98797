"""Image registration: does one picture reappear inside the other, edited but not re-shot?

The decision unit judges a pair from global evidence (descriptor cosines, hashes, 64 px thumbnails).
That evidence cannot tell a crop, a tilt or a border (a copy) from a second capture of the scene (not
a copy): both look alike everywhere and line up roughly. Registration settles what it leaves open.
Local features (ORB keypoints, also of the mirror image) are matched and an affine transform is fitted
with RANSAC; the pictures are resampled into the frame of the one contained in the other, and every
block of it must match its counterpart (normalised cross-correlation, a few pixels of slack). A copy
passes: its pixels are the original's, moved by one transform and re-toned. A second capture fails:
something in the scene moved, the viewpoint changed (parallax, perspective) or new content came in.

The pixels come from the files themselves, decoded again at `SIDE` px, and only for the pairs the
decision unit calls the same scene but not a copy. This is the only module that imports OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

SIDE = 480  # long side the pictures are compared at (px)
FEATURES = 1500  # ORB keypoints per picture
RATIO = 0.8  # Lowe's ratio test on descriptor matches
RANSAC_PX = 3.0  # reprojection error (px) within which a match supports the transform
BLUR_SIGMA = 1.2  # both pictures are smoothed alike: resampling, JPEG and noise must not count
GRID = 6  # the contained picture is split into GRID x GRID blocks
SLACK = 3  # pixels each block may shift to find its counterpart (residual of the fitted transform)
MARGIN = 6  # pixels at the frame's edge left out (resampling bleeds across it)
FLAT = 4.0  # a block this flat (grey levels, std) in both pictures says nothing and is skipped
# Decision thresholds, chosen on the accuracy benchmark built from the *training* photos
# (docs/benchmarks.md): there, they accept 0.85-0.90 of crops, tilts, borders and letterboxes and
# 6 of 350 pairs of a copy and a synthetic second capture (all of one water texture).
MIN_INLIERS = 12  # matches that agree with the transform
MIN_BLOCKS = 8  # informative blocks (not flat): fewer, and a moved thing could hide in a flat area
MIN_COVERAGE = 0.985  # share of the contained picture that lies inside the other
MIN_WORST_BLOCK = 0.85  # correlation of the worst-matching block
MAX_ANISOTROPY = 1.6  # ratio of the transform's two scales (a squeezed resize; not a different view)
# Views held at once while many pairs are registered (about 0.3 MB each).
VIEW_BATCH = 128

_orb = None
_matcher = None


def _tools():
    global _orb, _matcher
    if _orb is None:
        cv2.setNumThreads(1)  # pairs are spread over our own threads (same_pictures); OpenCV's pool only adds overhead
        _orb = cv2.ORB_create(nfeatures=FEATURES, fastThreshold=10)
        _matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    return _orb, _matcher


@dataclass
class View:
    """One picture prepared for registration: greyscale at `SIDE` px and its keypoints, as it is and,
    made when first needed, mirrored (a mirrored copy is still a copy)."""

    grey: np.ndarray  # (h, w) uint8
    points: np.ndarray  # (n, 2) float32 keypoint positions
    descriptors: np.ndarray | None  # (n, 32) uint8 ORB descriptors
    _mirrored: tuple[np.ndarray, np.ndarray | None] | None = None

    def mirrored(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Keypoints and descriptors of the mirror image (two threads may both make them: no harm)."""
        if self._mirrored is None:
            self._mirrored = _keypoints(_tools()[0], np.ascontiguousarray(self.grey[:, ::-1]))
        return self._mirrored


@dataclass(frozen=True)
class Registration:
    """How `b` lies in `a`, and how well the pixels agree there."""

    inliers: int
    mirrored: bool
    transform: np.ndarray  # (2, 3) affine, b's pixel coordinates (mirrored first, if so) -> a's
    coverage: float  # share of the contained picture that lies inside the other
    blocks: tuple[float, ...]  # correlation of each informative block
    anisotropy: float

    @property
    def worst_block(self) -> float:
        return min(self.blocks) if self.blocks else -1.0

    @property
    def same_picture(self) -> bool:
        return (
            self.inliers >= MIN_INLIERS
            and len(self.blocks) >= MIN_BLOCKS
            and self.coverage >= MIN_COVERAGE
            and self.worst_block >= MIN_WORST_BLOCK
            and self.anisotropy <= MAX_ANISOTROPY
        )

    def describe(self) -> str:
        verdict = "the same picture" if self.same_picture else "not shown to be the same picture"
        return (
            f"{verdict}: {self.inliers} matching keypoints{' (mirrored)' if self.mirrored else ''}, "
            f"{self.coverage:.0%} contained, worst of {len(self.blocks)} blocks {self.worst_block:.2f}"
        )


def prepare(rgb_or_grey: np.ndarray) -> View:
    """A decoded picture (any size; RGB or greyscale uint8) -> its registration view."""
    grey = rgb_or_grey if rgb_or_grey.ndim == 2 else cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2GRAY)
    scale = SIDE / max(grey.shape)
    if scale < 1:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    orb, _ = _tools()
    points, descriptors = _keypoints(orb, grey)
    return View(grey, points, descriptors)


def _keypoints(orb, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    found, descriptors = orb.detectAndCompute(grey, None)
    return np.array([k.pt for k in found], dtype=np.float32).reshape(-1, 2), descriptors


def _fit(pa, da, pb, db) -> tuple[np.ndarray | None, int]:
    """Affine transform b -> a from ratio-tested descriptor matches, and how many matches agree."""
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return None, 0
    _, matcher = _tools()
    good = [m[0] for m in matcher.knnMatch(db, da, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 3:
        return None, 0
    src = pb[[m.queryIdx for m in good]]
    dst = pa[[m.trainIdx for m in good]]
    transform, inliers = cv2.estimateAffine2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX, maxIters=2000, confidence=0.995
    )
    if transform is None:
        return None, 0
    return transform, int(inliers.sum())


def register(a: View, b: View) -> Registration | None:
    """Where `b` lies in `a` (as it is or mirrored), and how well the pixels agree; None when no
    transform is supported by enough keypoints, or the fit is degenerate (it proves nothing then)."""
    try:
        return _register(a, b)
    except (cv2.error, np.linalg.LinAlgError, ArithmeticError, ValueError):
        return None


def _register(a: View, b: View) -> Registration | None:
    transform, inliers = _fit(a.points, a.descriptors, b.points, b.descriptors)
    # the mirror image only when the picture as it is does not line up (half the keypoint work)
    mirrored, mirror_inliers = _fit(a.points, a.descriptors, *b.mirrored()) if inliers < MIN_INLIERS else (None, 0)
    is_mirrored = mirror_inliers > inliers
    grey_b = np.ascontiguousarray(b.grey[:, ::-1]) if is_mirrored else b.grey
    if is_mirrored:
        transform, inliers = mirrored, mirror_inliers
    if transform is None or inliers < 3 or not np.isfinite(transform).all():
        return None
    singular = np.linalg.svd(transform[:, :2], compute_uv=False)
    if singular[1] < 1e-6:
        return None
    inverse = cv2.invertAffineTransform(transform)
    (ha, wa), (hb, wb) = a.grey.shape, grey_b.shape
    # where each picture's frame lands in the other's: the contained one is fully covered
    b_in_a = cv2.warpAffine(np.ones((hb, wb), np.uint8), transform, (wa, ha), flags=cv2.INTER_NEAREST)
    a_in_b = cv2.warpAffine(np.ones((ha, wa), np.uint8), inverse, (wb, hb), flags=cv2.INTER_NEAREST)
    smooth_a = cv2.GaussianBlur(a.grey.astype(np.float32), (0, 0), BLUR_SIGMA)
    smooth_b = cv2.GaussianBlur(grey_b.astype(np.float32), (0, 0), BLUR_SIGMA)
    if a_in_b.mean() >= b_in_a.mean():  # b lies inside a: compare in b's frame
        inner, covered, coverage = smooth_b, a_in_b, float(a_in_b.mean())
        other = cv2.warpAffine(smooth_a, inverse, (wb, hb), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        inner, covered, coverage = smooth_a, b_in_a, float(b_in_a.mean())
        other = cv2.warpAffine(smooth_b, transform, (wa, ha), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.erode(covered, np.ones((5, 5), np.uint8)) > 0
    m = MARGIN
    blocks = _block_correlations(inner[m:-m, m:-m], other[m:-m, m:-m], valid[m:-m, m:-m])
    anisotropy = float(singular[0] / singular[1])
    return Registration(inliers, is_mirrored, transform, coverage, tuple(blocks), anisotropy)


def _block_correlations(inner: np.ndarray, other: np.ndarray, valid: np.ndarray) -> list[float]:
    """Per block of `inner` (GRID x GRID), the best correlation with `other` within SLACK px; blocks
    not wholly covered, or flat in both, are left out."""
    h, w = inner.shape
    if h < GRID * 4 or w < GRID * 4:
        return []
    padded = cv2.copyMakeBorder(other, SLACK, SLACK, SLACK, SLACK, cv2.BORDER_REPLICATE)
    out = []
    for i in range(GRID):
        for j in range(GRID):
            y0, y1, x0, x1 = i * h // GRID, (i + 1) * h // GRID, j * w // GRID, (j + 1) * w // GRID
            if not valid[y0:y1, x0:x1].all():
                continue
            block, counterpart = inner[y0:y1, x0:x1], other[y0:y1, x0:x1]
            if block.std() < FLAT and counterpart.std() < FLAT:
                continue
            if block.std() < 1.0:  # flat here, textured there: something is in one and not the other
                out.append(0.0)
                continue
            window = padded[y0 : y1 + 2 * SLACK, x0 : x1 + 2 * SLACK]
            out.append(float(cv2.matchTemplate(window, block, cv2.TM_CCOEFF_NORMED).max()))
    return out


def same_pictures(pairs, view_of: Callable[[int], View | None], threads: int = 1) -> list[bool]:
    """For each (a, b) pair of image indices, whether registration shows them to be the same picture.

    `view_of(i)` reads and prepares image i (None: unreadable). Views are made and pairs registered
    on `threads` threads (decoding and OpenCV release the GIL), VIEW_BATCH views at a time: pairs
    come sorted by their first image, so a batch's views serve many pairs and memory stays bounded."""
    pairs = [(int(a), int(b)) for a, b in pairs]
    out: list[bool] = []
    kept: dict[int, View | None] = {}
    with ThreadPoolExecutor(max(1, threads)) as pool:
        start = 0
        while start < len(pairs):
            needed: dict[int, None] = {}
            end = start
            while end < len(pairs) and len(needed) < VIEW_BATCH:
                needed.update(dict.fromkeys(pairs[end]))
                end += 1
            missing = [i for i in needed if i not in kept]
            views = {i: kept[i] for i in needed if i in kept}
            views.update(zip(missing, pool.map(view_of, missing)))
            batch = pairs[start:end]
            out += pool.map(_same, [views[a] for a, _ in batch], [views[b] for _, b in batch])
            kept, start = views, end
    return out


def _same(a: View | None, b: View | None) -> bool:
    if a is None or b is None:
        return False
    found = register(a, b)
    return found is not None and found.same_picture
