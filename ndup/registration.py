"""Image registration: does one picture reappear inside the other, edited but not re-shot?

The decision unit judges a pair from global evidence (descriptor cosines, hashes, 64 px thumbnails).
That evidence cannot tell a crop, a tilt or a border (a copy) from a second capture of the scene (not
a copy): both look alike everywhere and line up roughly. Registration settles what it leaves open.
Local features (ORB keypoints, also of the mirror image) are matched and an affine transform is fitted
with RANSAC; pictures with too few corners for that (smooth wallpapers, gradients, graphics) are placed
by their intensities instead, a coarse search refined by ECC, and only an affine placement counts: when a
perspective transform fits markedly better, the viewpoint changed. The pictures are resampled into
the frame of the one contained in the other, and every block of it must match its counterpart
(normalised cross-correlation, a few pixels of slack; smaller blocks where most of it is flat), and no
part may have moved against the rest: each block's displacement is measured to a fraction of a pixel,
an affine field is fitted to them robustly, and what it leaves (the motion no single transform
explains) must stay below a quarter of a pixel. A copy passes: its pixels are the original's, moved by
one transform and re-toned. A second capture fails: something in the scene moved (even by a pixel or
two, as between consecutive video frames), the viewpoint changed (parallax, perspective) or new content
came in.

The pixels come from the files themselves at `SIDE` px (kept from the scan's own decode where that gives
the same pixels, else decoded again), for the pairs the decision unit calls the same scene but not a
copy (registration may show them to be one picture) and for those it calls copies (registration may
show parts that moved: another frame). This is the only module that imports OpenCV.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ndup.decode import REGISTRATION_SIDE as SIDE  # long side the pictures are compared at (px)

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
# Pictures with too few corners for keypoints (flat wallpapers, gradients, graphics) are aligned by their
# intensities instead: a coarse search over tilt, scale and shift, then ECC.
FEW_KEYPOINTS = 100  # keypoints in either picture below which the intensity search is tried
COARSE_SIDE = 96  # px: long side of the coarse search
COARSE_ANGLES = tuple(range(-18, 19, 3))  # degrees of tilt tried (the edits people make: ±15°)
COARSE_SCALES = tuple(0.4 * 1.07**i for i in range(15))  # the contained picture's size in the other's (0.4-1.05)
INTENSITY_TRIES = 2  # best coarse placements refined and checked
MIN_ECC = 0.95  # correlation of the whole contained picture once ECC has aligned it
# px at SIDE that the contained picture's corners move when a perspective transform (ECC) replaces the
# affine one. A copy is one affine transform away (crop, scale, tilt, mirror); a second capture of a smooth
# scene, seen from elsewhere, is a perspective one. Chosen on the training photos' benchmark
# (benchmarks/smooth_pictures.py prints the corner shifts of copies and of second captures where they decide).
MAX_PERSPECTIVE = 1.5
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
    # correlation of the contained picture with the other once aligned by intensity (ECC); None when the
    # transform came from keypoints
    intensity: float | None = None
    # px the corners move when perspective is allowed too (intensity fits only; None: ECC failed, or not
    # measured because the fit fails on the rest)
    perspective: float | None = None

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
        """One transform, supported by enough keypoints (or, for pictures with too few, by their
        intensities, with no perspective change), puts the one picture wholly inside the other."""
        if self.intensity is None:
            supported = self.inliers >= MIN_INLIERS
        else:
            supported = (
                self.intensity >= MIN_ECC and self.perspective is not None and self.perspective <= MAX_PERSPECTIVE
            )
        return (
            supported
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
        support = (
            f"{self.inliers} matching keypoints"
            if self.intensity is None
            else f"aligned by intensity (correlation {self.intensity:.3f}, "
            + ("perspective not measured)" if self.perspective is None else f"perspective {self.perspective:.1f} px)")
        )
        return (
            f"{verdict}: {support}{' (mirrored)' if self.mirrored else ''}, "
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
    if not any(r.verdict == SAME_PICTURE for r in found) and min(len(a.points), len(b.points)) < FEW_KEYPOINTS:
        found += [r for r in (_register_by_intensity(a, b),) if r is not None]
    return max(found, key=_rank) if found else None


def _rank(r: Registration) -> tuple:
    return (r.verdict == SAME_PICTURE, r.aligned, r.typical_block)


def _register_by_intensity(a: View, b: View) -> Registration | None:
    """For pictures with too few corners to match keypoints: the best coarse placements of one inside
    the other (either way round, as it is or mirrored), refined by ECC, then checked like any fit."""
    starts = []
    for is_mirrored in (False, True):
        grey_b = np.ascontiguousarray(b.grey[:, ::-1]) if is_mirrored else b.grey
        for b_inside in (True, False):
            inner, other = (grey_b, a.grey) if b_inside else (a.grey, grey_b)
            placed = _coarse_placement(inner, other)
            if placed is not None:
                starts.append((placed[0], is_mirrored, b_inside, inner, other, placed[1]))
    found = []
    for _, is_mirrored, b_inside, inner, other, start in sorted(starts, key=lambda s: -s[0])[:INTENSITY_TRIES]:
        refined = _ecc(inner, other, start)
        if refined is None:
            continue
        correlation, warp = refined  # inner -> other
        transform = warp if b_inside else cv2.invertAffineTransform(warp)
        perspective = functools.partial(_perspective, inner, other, warp)
        r = _register_as(a, b, is_mirrored, transform, 0, (correlation, perspective))
        if r is not None:
            found.append(r)
            if r.verdict == SAME_PICTURE:
                break
    return max(found, key=_rank) if found else None


def _perspective(inner: np.ndarray, other: np.ndarray, warp: np.ndarray) -> float | None:
    """How far (px) the corners of `inner` move when ECC refines the affine `warp` (inner -> other) into
    a perspective transform; None when it does not converge."""
    start = np.vstack([warp, [0, 0, 1]]).astype(np.float32)
    try:
        _, homography = cv2.findTransformECC(
            *map(_smoothed, (inner, other)), start.copy(), cv2.MOTION_HOMOGRAPHY, ECC_STOP, None, 5
        )
    except cv2.error:
        return None
    h, w = inner.shape
    corners = np.array([[0, w, w, 0], [0, 0, h, h], [1, 1, 1, 1]], np.float64)
    projected = homography @ corners
    if np.any(projected[2] <= 1e-6):
        return None
    return float(np.abs((start @ corners)[:2] - projected[:2] / projected[2]).max())


def _coarse_placement(inner: np.ndarray, other: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Where `inner` best lies in `other`, by normalised cross-correlation over COARSE_ANGLES x
    COARSE_SCALES at COARSE_SIDE px: (its score, a 2x3 affine from inner to other pixels at SIDE); None
    when it fits nowhere."""
    k = COARSE_SIDE / SIDE
    si, so = _smoothed(inner, k, sigma=1.0), _smoothed(other, k, sigma=1.0)
    (hi, wi), (ho, wo) = si.shape, so.shape
    templates = []
    for scale in COARSE_SCALES:
        size = (round(wi * scale), round(hi * scale))
        if min(size) >= 8 and size[0] <= wo and size[1] <= ho:
            template = cv2.resize(si, size, interpolation=cv2.INTER_AREA)
            if template.std() >= 1e-3:  # a flat template correlates with nothing
                templates.append((scale, template))
    best = (-2.0, None)
    for angle in COARSE_ANGLES:
        turn = cv2.getRotationMatrix2D((wo / 2, ho / 2), angle, 1.0)
        turned = cv2.warpAffine(so, turn, (wo, ho), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        for scale, template in templates:
            scores = cv2.matchTemplate(turned, template, cv2.TM_CCOEFF_NORMED)
            _, score, _, (x, y) = cv2.minMaxLoc(scores)
            if score > best[0]:
                best = (score, (angle, scale, x, y, turn))
    if best[1] is None:
        return None
    angle, scale, x, y, turn = best[1]
    # inner (SIDE) -> small inner -> template (scale) -> turned other (+x, +y) -> small other -> other (SIDE)
    to_turned = np.array([[scale * k, 0, x], [0, scale * k, y], [0, 0, 1]])
    from_turned = np.linalg.inv(np.vstack([turn, [0, 0, 1]]))
    return best[0], (np.diag([1 / k, 1 / k, 1]) @ from_turned @ to_turned)[:2].astype(np.float32)


def _ecc(inner: np.ndarray, other: np.ndarray, start: np.ndarray) -> tuple[float, np.ndarray] | None:
    """ECC from `start` (inner -> other) at a quarter, a half, then full size: (correlation, refined
    transform); None when it does not converge."""
    warp = start.copy()
    try:
        for factor in (0.25, 0.5, 1.0):
            scaled = warp.copy()
            scaled[:, 2] *= factor
            small = [_smoothed(g, factor) for g in (inner, other)]
            correlation, scaled = cv2.findTransformECC(*small, scaled, cv2.MOTION_AFFINE, ECC_STOP, None, 5)
            warp = scaled.copy()
            warp[:, 2] /= factor
    except cv2.error:
        return None
    return float(correlation), warp


def _smoothed(grey: np.ndarray, factor: float = 1.0, sigma: float = 1.5) -> np.ndarray:
    """`grey` resized by `factor` and smoothed, as float32 (what ECC and the coarse search compare)."""
    if factor != 1.0:
        size = (max(1, round(grey.shape[1] * factor)), max(1, round(grey.shape[0] * factor)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(grey.astype(np.float32), (0, 0), sigma)


def _register_as(
    a: View, b: View, is_mirrored: bool, transform, inliers: int, by_intensity: tuple | None = None
) -> Registration | None:
    """`b` placed in `a` by `transform`, checked block by block. `by_intensity`: (ECC correlation, a
    function that measures the perspective px) when the transform came from intensities rather than
    `inliers` keypoints."""
    grey_b = np.ascontiguousarray(b.grey[:, ::-1]) if is_mirrored else b.grey
    if transform is None or (inliers < 3 and by_intensity is None) or not np.isfinite(transform).all():
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

    pictures = compared(BLUR_SIGMA)
    blocks = _block_correlations(*pictures, valid, GRID)
    if len(blocks) < MIN_BLOCKS:  # mostly flat: smaller blocks find the detail there is
        blocks = _block_correlations(*pictures, valid, 2 * GRID)
    anisotropy = float(singular[0] / singular[1])
    intensity, perspective = by_intensity or (None, None)
    found = Registration(
        inliers, is_mirrored, transform, float(covered.mean()), tuple(blocks), anisotropy, None, intensity
    )
    if perspective is not None and replace(found, perspective=0.0).aligned:
        # a perspective fit (ECC) costs more than all the rest: measured only where it decides the verdict
        found = replace(found, perspective=perspective())
    # motion only matters, and is only measured, where one picture lies wholly inside the other
    return replace(found, motion=_motion(*compared(MOTION_SIGMA), valid)) if found.aligned else found


def _block_correlations(inner: np.ndarray, other: np.ndarray, valid: np.ndarray, grid: int) -> list[float]:
    """Per block of `inner` (grid x grid), the best correlation with `other` within SLACK px; blocks
    not wholly covered, or flat in both, are left out."""
    h, w = inner.shape
    if h < grid * 4 or w < grid * 4:
        return []
    padded = cv2.copyMakeBorder(other, SLACK, SLACK, SLACK, SLACK, cv2.BORDER_REPLICATE)
    out = []
    for y0, y1, x0, x1 in _grid(h, w, grid):
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


def _grid(h: int, w: int, n: int):
    """The (y0, y1, x0, x1) bounds of the n x n blocks of an h x w picture, row by row."""
    for i in range(n):
        for j in range(n):
            yield i * h // n, (i + 1) * h // n, j * w // n, (j + 1) * w // n


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
    if max(h, w) < MIN_MOTION_SIDE:
        return None
    other = _refined(inner, other, valid)
    padded = cv2.copyMakeBorder(other, SLACK, SLACK, SLACK, SLACK, cv2.BORDER_REPLICATE)
    centres, shifts, tensors = [], [], []
    for y0, y1, x0, x1 in _grid(h, w, MOTION_GRID):
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


class RecentViews:
    """The views used last, up to `capacity` (VIEW_BATCH: about 40 MB), kept from one batch of pairs
    to the next and, held by the caller, from one `judge` call to the next (a match verifies its
    pairs in chunks, and a picture's pairs fall in several)."""

    def __init__(self, capacity: int | None = None):
        self.capacity = VIEW_BATCH if capacity is None else capacity
        self._views: OrderedDict[int, View | None] = OrderedDict()

    def __contains__(self, i: int) -> bool:
        return i in self._views

    def get(self, i: int) -> View | None:
        self._views.move_to_end(i)
        return self._views[i]

    def keep(self, views: dict[int, View | None]) -> None:
        for i, v in views.items():
            self._views[i] = v
            self._views.move_to_end(i)
        while len(self._views) > self.capacity:
            self._views.popitem(last=False)


def judge(
    pairs, view_of: Callable[[int], View | None], threads: int = 1, recent: RecentViews | None = None
) -> list[int]:
    """For each (a, b) pair of image indices, what registration shows: SAME_PICTURE, ANOTHER_FRAME or
    NOT_SHOWN.

    `view_of(i)` reads and prepares image i (None: unreadable). Views are made and pairs registered
    on `threads` threads (decoding and OpenCV release the GIL), VIEW_BATCH views at a time: pairs
    come sorted by their first image, so a batch's views serve many pairs and memory stays bounded.
    The views used last are kept (`recent`) and read again only when they have been let go."""
    pairs = [(int(a), int(b)) for a, b in pairs]
    recent = RecentViews() if recent is None else recent
    out: list[int] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        start = 0
        while start < len(pairs):
            needed: dict[int, None] = {}
            end = start
            while end < len(pairs) and len(needed) < VIEW_BATCH:
                needed.update(dict.fromkeys(pairs[end]))
                end += 1
            views = {i: recent.get(i) for i in needed if i in recent}
            missing = [i for i in needed if i not in views]
            views.update(zip(missing, pool.map(view_of, missing)))
            batch = pairs[start:end]
            out += pool.map(_judge, [views[a] for a, _ in batch], [views[b] for _, b in batch])
            recent.keep(views)
            start = end
    return out


def _judge(a: View | None, b: View | None) -> int:
    if a is None or b is None:
        return NOT_SHOWN
    found = register(a, b)
    return NOT_SHOWN if found is None else found.verdict
