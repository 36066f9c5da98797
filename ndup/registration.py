"""Image registration: does one picture reappear inside the other, edited but not re-shot?

The decision unit judges a pair from global evidence (descriptor cosines, hashes, 64 px thumbnails).
That evidence cannot tell a crop, a tilt or a border (a copy) from a second capture of the scene (not
a copy): both look alike everywhere and line up roughly. Registration settles what it leaves open.
Local features (ORB keypoints, also of the mirror image) are matched and an affine transform is fitted
with RANSAC; the pictures are resampled into the frame of the one contained in the other, and every
block of it must match its counterpart (normalised cross-correlation, a few pixels of slack), and no
part may have moved against the rest: each block's displacement is measured to a fraction of a pixel,
an affine field is fitted to them robustly, and what it leaves (the motion no single transform
explains) must stay below a quarter of a pixel. A copy passes: its pixels are the original's, moved by
one transform and re-toned. A second capture fails: something in the scene moved (even by a pixel or
two, as between consecutive video frames), the viewpoint changed (parallax, perspective) or new content
came in.

The pixels come from the files themselves, decoded again at `SIDE` px, for the pairs the decision unit
calls the same scene but not a copy (registration may show them to be one picture) and for those it
calls copies (registration may show parts that moved: another frame). This is the only module that
imports OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

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
# px at SIDE: the median block displacement no affine field explains (_motion). Copies on that benchmark
# stay below it in 99.5% of pairs that line up (median 0.014 px; benchmarks/motion_threshold.py);
# consecutive video frames reach 0.3-0.5.
MAX_MOTION = 0.25
# The motion measure: finer blocks, lighter smoothing (displacements of a fraction of a pixel must show).
MOTION_GRID = 8
MOTION_SIGMA = 0.8
MIN_MOTION_BLOCKS = 6  # blocks that pin their displacement down, needed to measure it at all
MIN_MOTION_SIDE = 240  # px: smaller pictures are too coarse to measure a fraction of a pixel
ECC_STOP = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)  # refining the transform
MIN_SHARPNESS = 0.01  # correlation lost per px² away from a block's peak, in its sharpest direction
# What registration shows about a pair (ndup.verify reads these numbers).
SAME_PICTURE, NOT_SHOWN, ANOTHER_FRAME = 1, 0, -1
# Views held at once while many pairs are registered (about 0.3 MB each).
VIEW_BATCH = 128

_orb = None
_matcher = None


def _tools():
    global _orb, _matcher
    if _orb is None:
        cv2.setNumThreads(1)  # pairs are spread over our own threads (judge); OpenCV's pool only adds overhead
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
    # px at SIDE that parts moved against the rest; None: not measured (not aligned) or too small or
    # smooth to tell
    motion: float | None

    @property
    def worst_block(self) -> float:
        return min(self.blocks) if self.blocks else -1.0

    @property
    def typical_block(self) -> float:
        return float(np.median(self.blocks)) if self.blocks else -1.0

    @property
    def same_picture(self) -> bool:
        return self.verdict == SAME_PICTURE

    @property
    def aligned(self) -> bool:
        """One transform, supported by enough keypoints, puts the one picture wholly inside the other."""
        return (
            self.inliers >= MIN_INLIERS
            and len(self.blocks) >= MIN_BLOCKS
            and self.coverage >= MIN_COVERAGE
            and self.anisotropy <= MAX_ANISOTROPY
        )

    @property
    def lines_up(self) -> bool:
        """Aligned, and every part of the contained picture finds its counterpart in the other (whether
        or not some moved a little)."""
        return self.aligned and self.worst_block >= MIN_WORST_BLOCK

    @property
    def moved(self) -> bool:
        """Parts of the picture moved against the rest: another frame, not a copy."""
        return self.motion is not None and self.motion > MAX_MOTION

    @property
    def verdict(self) -> int:
        """SAME_PICTURE (it all lines up, nothing moved), ANOTHER_FRAME (aligned, most blocks match, but
        parts moved) or NOT_SHOWN. A block that finds no counterpart (a text overlay, or a thing that moved far) does
        not make another frame by itself: the motion of the rest must show it."""
        if not self.aligned:
            return NOT_SHOWN
        if self.moved and self.typical_block >= MIN_WORST_BLOCK:  # most of it lines up: a wrong fit does not
            return ANOTHER_FRAME
        return SAME_PICTURE if self.lines_up else NOT_SHOWN

    def describe(self) -> str:
        verdict = {SAME_PICTURE: "the same picture", ANOTHER_FRAME: "another frame of the same scene"}.get(
            self.verdict, "not shown to be the same picture"
        )
        return (
            f"{verdict}: {self.inliers} matching keypoints{' (mirrored)' if self.mirrored else ''}, "
            f"{self.coverage:.0%} contained, worst of {len(self.blocks)} blocks {self.worst_block:.2f}, "
            + ("too small or smooth to measure motion" if self.motion is None else f"parts moved {self.motion:.2f} px")
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
    as_it_is = _register_as(a, b, False, *_fit(a.points, a.descriptors, b.points, b.descriptors))
    if as_it_is is not None and as_it_is.verdict == SAME_PICTURE:
        return as_it_is
    # the mirror image only when the picture as it is does not line up (half the keypoint work); a
    # nearly symmetric picture can line up roughly both ways, and the better of the two stands
    mirrored = _register_as(a, b, True, *_fit(a.points, a.descriptors, *b.mirrored()))
    found = [r for r in (as_it_is, mirrored) if r is not None]
    return max(found, key=lambda r: (r.verdict == SAME_PICTURE, r.aligned, r.typical_block)) if found else None


def _register_as(a: View, b: View, is_mirrored: bool, transform, inliers: int) -> Registration | None:
    grey_b = np.ascontiguousarray(b.grey[:, ::-1]) if is_mirrored else b.grey
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
    b_inside = a_in_b.mean() >= b_in_a.mean()  # b lies inside a: compare in b's frame
    covered = a_in_b if b_inside else b_in_a
    valid = (cv2.erode(covered, np.ones((5, 5), np.uint8)) > 0)[MARGIN:-MARGIN, MARGIN:-MARGIN]

    def compared(sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """The contained picture and the other resampled onto it, both smoothed alike (before the warp,
        so resampling, JPEG and noise do not count), without the frame's MARGIN."""
        sa, sb = (cv2.GaussianBlur(g.astype(np.float32), (0, 0), sigma) for g in (a.grey, grey_b))
        if b_inside:
            inner, other = (
                sb,
                cv2.warpAffine(sa, inverse, (wb, hb), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            )
        else:
            inner, other = (
                sa,
                cv2.warpAffine(sb, transform, (wa, ha), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            )
        m = MARGIN
        return inner[m:-m, m:-m], other[m:-m, m:-m]

    blocks = _block_correlations(*compared(BLUR_SIGMA), valid)
    anisotropy = float(singular[0] / singular[1])
    found = Registration(inliers, is_mirrored, transform, float(covered.mean()), tuple(blocks), anisotropy, None)
    # motion only matters, and is only measured, where one picture lies wholly inside the other
    return replace(found, motion=_motion(*compared(MOTION_SIGMA), valid)) if found.aligned else found


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


def _motion(inner: np.ndarray, other: np.ndarray, valid: np.ndarray) -> float | None:
    """How far parts of `inner` moved against the rest in `other` (px), beyond one affine transform;
    None when the pictures are too small or too smooth to tell.

    The transform is first refined over the whole picture (_refined). Then each block (MOTION_GRID x
    MOTION_GRID) finds its displacement to a fraction of a pixel: the correlation peak within SLACK,
    refined by a parabola. How sharp that peak is, in each direction,
    says how well the block pins its displacement down: a smooth gradient or a flat area not at all, a
    block of parallel lines only across them. Blocks whose peak is blunt in every direction are left
    out. An affine field is fitted to the displacements three times, each time without the quarter that
    fits worst: the fitted transform's own error is an affine field and drops out. Each block's residual
    counts along the directions its peak is sharp in, and the median is returned: a copy's blocks agree
    to a tenth of a pixel or so; frames a moment apart do not."""
    h, w = inner.shape
    grid = MOTION_GRID
    if max(h, w) < MIN_MOTION_SIDE:
        return None
    other = _refined(inner, other, valid)
    padded = cv2.copyMakeBorder(other, SLACK, SLACK, SLACK, SLACK, cv2.BORDER_REPLICATE)
    centres, shifts, tensors = [], [], []
    for i in range(grid):
        for j in range(grid):
            y0, y1, x0, x1 = i * h // grid, (i + 1) * h // grid, j * w // grid, (j + 1) * w // grid
            block = inner[y0:y1, x0:x1]
            if not valid[y0:y1, x0:x1].all() or block.std() < FLAT:
                continue
            scores = cv2.matchTemplate(padded[y0 : y1 + 2 * SLACK, x0 : x1 + 2 * SLACK], block, cv2.TM_CCOEFF_NORMED)
            _, _, _, (px, py) = cv2.minMaxLoc(scores)
            tensor = _sharpness(scores, px, py)
            if np.linalg.eigvalsh(tensor)[1] < MIN_SHARPNESS:
                continue
            dx = px - SLACK + (_vertex(*scores[py, px - 1 : px + 2]) if 0 < px < 2 * SLACK else 0.0)
            dy = py - SLACK + (_vertex(*scores[py - 1 : py + 2, px]) if 0 < py < 2 * SLACK else 0.0)
            centres.append(((x0 + x1) / (2 * w), (y0 + y1) / (2 * h)))
            shifts.append((dx, dy))
            tensors.append(tensor)
    if len(centres) < MIN_MOTION_BLOCKS:
        return None
    shifts_, tensors_ = np.array(shifts), np.array(tensors)
    weights = tensors_ / np.linalg.eigvalsh(tensors_)[:, 1:, None]  # each block's sharpest direction weighs 1
    roots = _psd_root(weights)  # (n, 2, 2): |roots @ r| is r measured along the pinned-down directions
    one = np.c_[np.array(centres), np.ones(len(centres))]  # (n, 3): x, y, 1
    zero = np.zeros_like(one)
    design = np.stack([np.c_[one, zero], np.c_[zero, one]], axis=1)  # (n, 2, 6): the affine field's rows
    rows, targets = roots @ design, np.einsum("nij,nj->ni", roots, shifts_)
    fit = np.ones(len(centres), bool)
    for _ in range(3):  # weighted least squares, without the quarter of blocks that fit worst
        coef, *_ = np.linalg.lstsq(rows[fit].reshape(-1, 6), targets[fit].reshape(-1), rcond=None)
        residual = np.linalg.norm(targets - rows @ coef, axis=1)
        fit = residual <= np.percentile(residual, 75)
    return float(np.median(residual))


def _psd_root(matrices: np.ndarray) -> np.ndarray:
    """Square roots of symmetric positive semi-definite (n, 2, 2) matrices."""
    values, vectors = np.linalg.eigh(matrices)
    return (vectors * np.sqrt(np.maximum(values, 0.0))[:, None, :]) @ vectors.transpose(0, 2, 1)


def _refined(inner: np.ndarray, other: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`other` moved onto `inner` by the affine correction that best aligns all of it (ECC): the
    keypoint fit can be off by a few pixels, more than the blocks search."""
    correction = np.eye(2, 3, dtype=np.float32)
    try:
        _, correction = cv2.findTransformECC(
            inner, other, correction, cv2.MOTION_AFFINE, ECC_STOP, valid.astype(np.uint8), 5
        )
    except cv2.error:  # did not converge: the keypoint fit stands
        return other
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(other, correction, other.shape[::-1], flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _sharpness(scores: np.ndarray, px: int, py: int) -> np.ndarray:
    """How fast the correlation falls away from its peak, per direction: minus its second derivatives
    (a 2x2 matrix, made positive semi-definite); at the window's edge, measured one pixel in."""
    x, y = min(max(px, 1), scores.shape[1] - 2), min(max(py, 1), scores.shape[0] - 2)
    xx = scores[y, x - 1] - 2 * scores[y, x] + scores[y, x + 1]
    yy = scores[y - 1, x] - 2 * scores[y, x] + scores[y + 1, x]
    xy = (scores[y + 1, x + 1] - scores[y + 1, x - 1] - scores[y - 1, x + 1] + scores[y - 1, x - 1]) / 4
    values, vectors = np.linalg.eigh(-np.array([[xx, xy], [xy, yy]], dtype=np.float64))
    return (vectors * np.maximum(values, 0.0)) @ vectors.T


def _vertex(before: float, at: float, after: float) -> float:
    """Offset (-0.5..0.5) of the top of the parabola through three neighbouring scores."""
    bend = before - 2 * at + after
    return 0.0 if bend >= 0 else float(np.clip(0.5 * (before - after) / bend, -0.5, 0.5))


def judge(pairs, view_of: Callable[[int], View | None], threads: int = 1) -> list[int]:
    """For each (a, b) pair of image indices, what registration shows: SAME_PICTURE, ANOTHER_FRAME or
    NOT_SHOWN.

    `view_of(i)` reads and prepares image i (None: unreadable). Views are made and pairs registered
    on `threads` threads (decoding and OpenCV release the GIL), VIEW_BATCH views at a time: pairs
    come sorted by their first image, so a batch's views serve many pairs and memory stays bounded."""
    pairs = [(int(a), int(b)) for a, b in pairs]
    out: list[int] = []
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
            out += pool.map(_judge, [views[a] for a, _ in batch], [views[b] for _, b in batch])
            kept, start = views, end
    return out


def _judge(a: View | None, b: View | None) -> int:
    if a is None or b is None:
        return NOT_SHOWN
    found = register(a, b)
    return NOT_SHOWN if found is None else found.verdict
