"""Candidate pairs -> verdicts: is this pair the same picture (copy), the same scene (similar), or neither?

Pure numpy, so matching never needs torch once embeddings are cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ndup.records import ImageRecord, PairVerdict


def _hash_bits(hexes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    bytes_ = x.view(np.uint8).reshape(-1, 8)
    return np.unpackbits(bytes_, axis=1).sum(axis=1).astype(np.int64)


@dataclass(frozen=True)
class PairFeatures:
    """Per-pair evidence, one row per candidate pair."""

    pairs: np.ndarray  # (P, 2) indices
    cosine: np.ndarray
    phash: np.ndarray  # Hamming distances, 0-64
    dhash: np.ndarray
    same_bytes: np.ndarray  # bool

    @classmethod
    def compute(cls, images: Sequence[ImageRecord], vectors: np.ndarray, pairs: np.ndarray) -> PairFeatures:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        a, b = pairs[:, 0], pairs[:, 1]
        cosine = np.einsum("ij,ij->i", vectors[a], vectors[b]) if len(pairs) else np.zeros(0)
        ph = _hash_bits([im.facts.phash for im in images])
        dh = _hash_bits([im.facts.dhash for im in images])
        hashes = np.array([im.facts.content_hash for im in images], dtype=object)
        return cls(
            pairs=pairs,
            cosine=np.clip(cosine, -1.0, 1.0),
            phash=_popcount64(ph[a] ^ ph[b]),
            dhash=_popcount64(dh[a] ^ dh[b]),
            same_bytes=hashes[a] == hashes[b] if len(pairs) else np.zeros(0, dtype=bool),
        )


@dataclass(frozen=True)
class ThresholdVerifier:
    """Hand-set thresholds on the plain backbone's cosine and the perceptual hashes."""

    copy_cosine: float = 0.93
    hash_copy_cosine: float = 0.80  # enough when the perceptual hashes also agree
    hash_copy_phash: int = 8
    similar_cosine: float = 0.86

    def verdicts(self, f: PairFeatures) -> list[PairVerdict]:
        out = []
        for (a, b), cos, ph, same in zip(f.pairs, f.cosine, f.phash, f.same_bytes):
            if same:
                out.append(PairVerdict(int(a), int(b), "exact", 1.0, float(cos)))
            elif cos >= self.copy_cosine or (ph <= self.hash_copy_phash and cos >= self.hash_copy_cosine):
                out.append(PairVerdict(int(a), int(b), "copy", float(cos), float(cos)))
            elif cos >= self.similar_cosine:
                out.append(PairVerdict(int(a), int(b), "similar", float(cos), float(cos)))
        return out
