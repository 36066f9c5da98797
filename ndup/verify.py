"""Candidate pairs -> verdicts: the same picture (copy), the same scene (similar), or neither.

The decision unit is a small neural network over a vector of pair distances, trained by `ndup train`
and stored in the weights file; it runs here in numpy, so matching never needs torch once the
embeddings are cached. The threshold verifiers exist for the ablation benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ndup.model.spec import part_bounds
from ndup.records import ImageRecord, PairVerdict
from ndup.structure import structure_match

FEATURES = (
    "cosine",  # of the full descriptors
    "cos_low",  # per part: texture/colour, mid-level, semantic
    "cos_mid",
    "cos_high",
    "l1",
    "l2",
    "phash_aligned",  # Hamming distance / 64 of the pHashes of the aligned images
    "phash",  # of the files as they are
    "dhash",
    "aspect",  # |log aspect ratio| difference, a quarter turn allowed
    "pixels",  # |log| ratio of pixel counts
    "structure",  # best correlation of one aligned thumbnail inside the other (ndup.structure)
    "structure_worst",  # the worst-matching block at that fit: what moved between two shots
)
# Pairs less alike than this are not worth the pixel-level check (they are never copies anyway).
STRUCTURE_GATE = 0.75
NOT_CHECKED = -1.0
# A second capture of a scene lines up with the first at some scale and offset (ndup.structure); two
# pictures that line up nowhere are look-alikes at most (two beaches, two abstract images), and a
# "similar" group of them is noise. On the held-out benchmark this keeps 88% of similar shots.
SIMILAR_MIN_STRUCTURE = 0.8
CLASSES = ("different", "similar", "copy")
# Names what ndup.registration decides, for the pair-verdict cache: bump it when its verdicts change.
REGISTRATION = "registration-4"
# Pairs registered: not copies by the evidence, but at least this likely the same scene. Calibrated
# probabilities: on the held-out benchmark, 0.1 sends 4% more pairs than 0.5 (the "similar" line)
# and 235 more real copies, which the unit had put far below that line (crops of half the area).
REGISTER_MIN_SAME_SCENE = 0.1
STRUCTURE = FEATURES.index("structure")
# How each feature bears on "alike": +1 larger is more alike, -1 larger is less alike, 0 not used by the
# decision unit. Unused: l1 (l2 says the same), the hashes of the files as they are (a quarter turn
# makes them random; the aligned pHash is the one that counts), and the pixel-count ratio (a resized
# copy and a second shot differ in it alike; as evidence it only teaches what the training edits did).
EVIDENCE = {
    "cosine": 1, "cos_low": 1, "cos_mid": 1, "cos_high": 1, "l1": 0, "l2": -1, "phash_aligned": -1,
    "phash": 0, "dhash": 0, "aspect": -1, "pixels": 0, "structure": 1, "structure_worst": 1,
}  # fmt: skip


def _bits(values: Sequence[str | int]) -> np.ndarray:
    return np.array([int(v, 16) if isinstance(v, str) else int(v) & (2**64 - 1) for v in values], dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(a ^ b, dtype=np.uint64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.float64)


class SparseRows:
    """An (N, D) array most of whose rows are absent (NaN), holding only the present ones: the second
    orientation hypotheses, which few images have. Held densely they were 100 MB of NaN at 100,000
    images, through the whole match. Indexing gives dense rows, NaN where absent."""

    def __init__(self, n: int, owners: np.ndarray, rows: np.ndarray):
        self.owners = np.asarray(owners, dtype=np.int64)  # ascending: the images that have a row
        self.rows = rows
        self._slot = np.full(n, -1, dtype=np.int64)
        self._slot[self.owners] = np.arange(len(self.owners))

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SparseRows:
        present = ~np.isnan(dense[:, 0])
        return cls(len(dense), np.flatnonzero(present), dense[present])

    def __getitem__(self, images: np.ndarray) -> np.ndarray:
        slots = self._slot[images]
        out = np.full((len(slots), self.rows.shape[1]), np.nan, dtype=self.rows.dtype)
        present = slots >= 0
        out[present] = self.rows[slots[present]]
        return out


@dataclass(frozen=True)
class PairInputs:
    """Per-image arrays the pair features are computed from (the same in training and in a scan)."""

    vectors: np.ndarray  # (N, D) unit descriptors
    phash_aligned: np.ndarray  # (N,) uint64
    phash: np.ndarray  # (N,) uint64
    dhash: np.ndarray
    width: np.ndarray  # (N,) as displayed
    height: np.ndarray
    content_hash: np.ndarray | None = None  # (N,) object: identical bytes are exact duplicates
    # The second orientation hypothesis of ambiguous images: NaN rows (and 0 hashes) where there is none
    # (a dense (N, D) array is taken, and kept as SparseRows).
    alt_vectors: SparseRows | np.ndarray | None = None
    alt_phash_aligned: np.ndarray | None = None
    # (image index, second hypothesis?) -> the prepared aligned thumbnail (ndup.structure), or None.
    # A function, so that a scan loads thumbnails only for the pairs that need the pixel-level check.
    thumbs: Callable[[int, bool], np.ndarray | None] | None = None
    # (P, 2) pairs -> what registration (ndup.registration) shows of each: +1 one picture, edited; -1
    # another frame of one scene (it all lines up, but parts moved); 0 neither. Without it, no pair is
    # registered (the "unit" ablation).
    registered: Callable[[np.ndarray], Sequence[int]] | None = None

    def __post_init__(self):
        if isinstance(self.alt_vectors, np.ndarray):
            object.__setattr__(self, "alt_vectors", SparseRows.from_dense(self.alt_vectors))

    @classmethod
    def from_records(
        cls,
        images: Sequence[ImageRecord],
        vectors: np.ndarray,
        aligned: Sequence[str | int],
        alt_vectors: SparseRows | np.ndarray | None = None,
        alt_aligned: Sequence[str | int] | None = None,
        thumbs: Callable[[int, bool], np.ndarray | None] | None = None,
        registered: Callable[[np.ndarray], Sequence[int]] | None = None,
    ):
        return cls(
            vectors=vectors,
            phash_aligned=_bits(aligned),
            phash=_bits([im.facts.phash for im in images]),
            dhash=_bits([im.facts.dhash for im in images]),
            width=np.array([im.facts.width for im in images], dtype=np.float64),
            height=np.array([im.facts.height for im in images], dtype=np.float64),
            content_hash=np.array([im.facts.content_hash for im in images], dtype=object),
            alt_vectors=alt_vectors,
            alt_phash_aligned=None if alt_aligned is None else _bits(alt_aligned),
            thumbs=thumbs,
            registered=registered,
        )

    def hypotheses(self, pairs: np.ndarray):
        """For each pair, the descriptors and aligned hashes of the hypotheses that agree best, and
        whether each side's is its second hypothesis."""
        a, b = pairs[:, 0], pairs[:, 1]
        va, vb = self.vectors[a].astype(np.float64), self.vectors[b].astype(np.float64)
        ha, hb = self.phash_aligned[a], self.phash_aligned[b]
        use_a, use_b = np.zeros(len(pairs), dtype=bool), np.zeros(len(pairs), dtype=bool)
        if self.alt_vectors is None:
            return va, vb, ha, hb, use_a, use_b
        best = np.einsum("ij,ij->i", va, vb)
        alt_a, alt_b = self.alt_vectors[a].astype(np.float64), self.alt_vectors[b].astype(np.float64)
        alt_ha, alt_hb = self.alt_phash_aligned[a], self.alt_phash_aligned[b]
        out_a, out_b, out_ha, out_hb = va.copy(), vb.copy(), ha.copy(), hb.copy()
        combos = ((alt_a, vb, alt_ha, hb, True, False), (va, alt_b, ha, alt_hb, False, True))
        combos += ((alt_a, alt_b, alt_ha, alt_hb, True, True),)
        for xa, xb, xha, xhb, alt_side_a, alt_side_b in combos:
            cos = np.nan_to_num(np.einsum("ij,ij->i", xa, xb), nan=-2.0)
            better = cos > best
            best = np.where(better, cos, best)
            out_a[better], out_b[better] = xa[better], xb[better]
            out_ha[better], out_hb[better] = xha[better], xhb[better]
            use_a[better], use_b[better] = alt_side_a, alt_side_b
        return out_a, out_b, out_ha, out_hb, use_a, use_b


# Pairs whose features are computed at once: the per-pair descriptor copies (float64, several per pair)
# then take tens of megabytes, not gigabytes, however many candidate pairs a library has.
FEATURE_CHUNK = 16384


def pair_features(inp: PairInputs, pairs: np.ndarray) -> np.ndarray:
    """(P, 2) index pairs -> (P, len(FEATURES)) evidence, from the best-agreeing orientation hypotheses."""
    if len(pairs) <= FEATURE_CHUNK:
        return _pair_features(inp, pairs)
    return np.concatenate(
        [_pair_features(inp, pairs[i : i + FEATURE_CHUNK]) for i in range(0, len(pairs), FEATURE_CHUNK)]
    )


def _pair_features(inp: PairInputs, pairs: np.ndarray) -> np.ndarray:
    a, b = pairs[:, 0], pairs[:, 1]
    va, vb, pha, phb, alt_a, alt_b = inp.hypotheses(pairs)
    cols = [np.einsum("ij,ij->i", va, vb)]
    if va.shape[1] == part_bounds()[-1][1]:
        for lo, hi, w in part_bounds():
            cols.append(np.einsum("ij,ij->i", va[:, lo:hi], vb[:, lo:hi]) / w)
    else:  # a descriptor without parts (the backbone ablation): the whole cosine stands in
        cols += [cols[0]] * 3
    diff = va - vb
    cols += [np.abs(diff).sum(1), np.sqrt((diff**2).sum(1))]
    cols += [hamming(pha, phb) / 64]
    cols += [hamming(inp.phash[a], inp.phash[b]) / 64, hamming(inp.dhash[a], inp.dhash[b]) / 64]
    la, lb = np.log(inp.width[a] / inp.height[a]), np.log(inp.width[b] / inp.height[b])
    cols.append(np.minimum(np.abs(la - lb), np.abs(la + lb)))
    cols.append(np.abs(np.log(inp.width[a] * inp.height[a]) - np.log(inp.width[b] * inp.height[b])))
    best, worst = np.full(len(pairs), NOT_CHECKED), np.full(len(pairs), NOT_CHECKED)
    if inp.thumbs is not None:
        for i in np.flatnonzero(cols[0] >= STRUCTURE_GATE):
            ta, tb = inp.thumbs(int(a[i]), bool(alt_a[i])), inp.thumbs(int(b[i]), bool(alt_b[i]))
            if ta is not None and tb is not None:
                best[i], worst[i], _ = structure_match(ta, tb)
    cols += [best, worst]
    return np.stack(cols, axis=1)


class DecisionUnit:
    """Two calibrated probabilities per pair, from a small network that is monotone in its evidence.

    Heads: "the same scene" (a copy or a second capture) and "the same picture" (a copy). Every input
    is oriented by `EVIDENCE` so that larger means more alike, and every weight is non-negative, so
    more evidence of sameness never lowers a probability. An unconstrained network extrapolates
    freely on pairs unlike any it trained on (unrelated images a CNN finds alike, say); this one cannot
    call a pair similar unless it looks more alike, in every respect, than pairs it learnt were not.
    """

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.mean = arrays["du_mean"]
        self.std = arrays["du_std"]
        self.signs = arrays["du_signs"]
        self.layers = []
        i = 0
        while f"du_w{i}" in arrays:
            self.layers.append((arrays[f"du_w{i}"], arrays[f"du_b{i}"]))
            i += 1
        self.scale = arrays["du_scale"]  # per head: Platt scaling fitted on held-out photos
        self.shift = arrays["du_shift"]
        self.copy_threshold = float(arrays["du_copy_threshold"])
        self.similar_threshold = float(arrays["du_similar_threshold"])

    @classmethod
    def load(cls, weights: Path) -> DecisionUnit:
        with np.load(weights) as z:
            return cls({k: z[k] for k in z.files if k.startswith("du_")})

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(P, F) -> (P, 2) uncalibrated scores of the heads (same scene, same picture)."""
        h = (features - self.mean) / self.std * self.signs
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.tanh(h)
        return h

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(P, F) -> (P, 3) calibrated probabilities of different / similar / copy."""
        z = self.logits(features) * self.scale + self.shift
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
        p_copy = p[:, 1]
        p_same = np.maximum(p[:, 0], p_copy)  # a copy is also the same scene
        return np.stack([1.0 - p_same, p_same - p_copy, p_copy], axis=1)

    def verdicts(self, inp: PairInputs, pairs: np.ndarray) -> list[PairVerdict]:
        if len(pairs) == 0:
            return []
        feats = pair_features(inp, pairs)
        probs = self.probabilities(feats)
        exact = np.zeros(len(pairs), dtype=bool)
        if inp.content_hash is not None:
            exact = inp.content_hash[pairs[:, 0]] == inp.content_hash[pairs[:, 1]]
        # Registration settles what the global evidence leaves open, both ways. Perhaps the same scene,
        # not a copy by the evidence: it may show the same pixels (a crop, tilt or border the evidence
        # could not tell from a second capture). A copy by the evidence: it may show parts that moved
        # (consecutive frames of a video or a burst look like one picture everywhere else).
        copy = probs[:, 2] >= self.copy_threshold
        same_scene = probs[:, 1] + probs[:, 2]
        checked = ~exact & (copy | (same_scene >= REGISTER_MIN_SAME_SCENE))
        registered = np.zeros(len(pairs), dtype=np.int8)
        if inp.registered is not None and checked.any():
            registered[checked] = inp.registered(pairs[checked])
        out = []
        for (a, b), p, f, is_exact, is_copy, r in zip(pairs, probs, feats, exact, copy, registered):
            a, b = int(a), int(b)
            if is_exact:
                out.append(PairVerdict(a, b, "exact", 1.0, float(f[0])))
            elif is_copy and r < 0:
                out.append(PairVerdict(a, b, "similar", float(p[1] + p[2]), float(f[0])))
            elif is_copy:
                out.append(PairVerdict(a, b, "copy", float(p[2]), float(f[0])))
            elif r > 0:
                out.append(PairVerdict(a, b, "copy", max(float(p[2]), self.copy_threshold), float(f[0])))
            elif p[1] + p[2] >= self.similar_threshold and f[STRUCTURE] >= SIMILAR_MIN_STRUCTURE:
                out.append(PairVerdict(a, b, "similar", float(p[1] + p[2]), float(f[0])))
            else:
                out.append(PairVerdict(a, b, None, float(p[2]), float(f[0])))
        return out


@dataclass(frozen=True)
class ThresholdVerifier:
    """One threshold on one feature, for the ablation benchmark: cosine (>=) or pHash distance (<=)."""

    feature: str = "cosine"
    threshold: float = 0.9

    def verdicts(self, inp: PairInputs, pairs: np.ndarray) -> list[PairVerdict]:
        if len(pairs) == 0:
            return []
        # one column is judged: the pixel-level check (about 20 ms a pair) would be computed for nothing
        feats = pair_features(replace(inp, thumbs=None), pairs)
        col = feats[:, FEATURES.index(self.feature)]
        copy = col <= self.threshold if self.feature.startswith(("phash", "dhash")) else col >= self.threshold
        score = 1.0 - col if self.feature.startswith(("phash", "dhash")) else col
        out = []
        for (a, b), is_copy, s, cos in zip(pairs, copy, score, feats[:, 0]):
            a, b = int(a), int(b)
            if inp.content_hash is not None and inp.content_hash[a] == inp.content_hash[b]:
                out.append(PairVerdict(a, b, "exact", 1.0, float(cos)))
            else:
                out.append(PairVerdict(a, b, "copy" if is_copy else None, float(s), float(cos)))
        return out
