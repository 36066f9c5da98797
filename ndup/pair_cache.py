"""Verdicts of candidate pairs remembered between scans, so that a rescan verifies only new pairs.

A pair's verdict depends only on the two contents (their facts, descriptors and aligned thumbnails,
all keyed by content hash) and on the verifier (model id, variant, threshold, the digest of the
whole weights file for the decision unit, the decoder's version, this module's version: see
`ndup.scan.verifier_id`), so it can be reused for as long as both contents are in the library. Without this, every
rescan of an unchanged library of 100,000 photos would verify about a million candidate pairs again.

Derived data in one file beside the cache (`CACHE.pairs`, numpy): written to a temporary name and
renamed; a missing, damaged or foreign file only means the pairs are verified again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ndup.records import PairVerdict

# Bump when what a verdict depends on changes in code (features, thresholds, tiers).
PAIR_CACHE_VERSION = 1
TIERS: tuple[str | None, ...] = (None, "exact", "copy", "similar")


class PairCache:
    def __init__(self, path: Path, verifier_id: str):
        self.path = Path(path)
        self.verifier_id = f"{PAIR_CACHE_VERSION}|{verifier_id}"
        self.reused = 0
        self.verified = 0
        self._last: dict | None = None  # what the previous call knew, saved or not
        self._unsaved = False  # the previous call knew more than the file holds

    def _load(self) -> dict | None:
        if self._last is not None:
            return self._last
        try:
            with open(self.path, "rb") as f, np.load(f, allow_pickle=False) as z:
                data = {name: z[name] for name in z.files}
            if str(data["verifier"]) != self.verifier_id:
                return None
            n = len(data["keys"])
            if not all(len(data[c]) == n for c in ("tier", "score", "similarity")):
                return None
            return data
        except Exception:  # missing or damaged: verify again
            return None

    def verdicts(
        self,
        hashes: Sequence[str],
        pairs: np.ndarray,
        verify: Callable[[np.ndarray], list[PairVerdict]],
        save: bool = True,
    ) -> list[PairVerdict]:
        """Verdicts of `pairs` (indices into `hashes`, the images' content hashes): cached ones reused,
        the others from `verify(those pairs)`; the file then holds exactly these pairs. Without `save`
        the file is left alone until a later call, which still reuses this call's verdicts."""
        n = len(pairs)
        uniq = sorted(set(hashes))
        pos = {h: i for i, h in enumerate(uniq)}
        img = np.array([pos[h] for h in hashes], dtype=np.int64)
        width = max(len(uniq), 1)
        keys = img[pairs[:, 0]] * width + img[pairs[:, 1]] if n else np.zeros(0, dtype=np.int64)
        tier = np.full(n, -1, dtype=np.int8)
        score = np.zeros(n, dtype=np.float32)
        sim = np.zeros(n, dtype=np.float32)
        hit = np.zeros(n, dtype=bool)
        cached = self._load()
        if cached is not None and n:
            old = cached["hashes"].astype(str)
            old_pos = {h: i for i, h in enumerate(old)}
            # this run's content index -> the cached file's (-1: a content it did not know)
            remap = np.array([old_pos.get(h, -1) for h in uniq], dtype=np.int64)
            ia, ib = remap[img[pairs[:, 0]]], remap[img[pairs[:, 1]]]
            known = (ia >= 0) & (ib >= 0)
            old_keys = np.where(known, ia * max(len(old), 1) + ib, -1)
            order = cached["keys"]  # sorted when written
            at = np.clip(np.searchsorted(order, old_keys), 0, max(len(order) - 1, 0))
            if len(order):
                hit = known & (order[at] == old_keys)
                tier[hit] = cached["tier"][at[hit]]
                score[hit] = cached["score"][at[hit]]
                sim[hit] = cached["similarity"][at[hit]]
        miss = np.flatnonzero(~hit)
        fresh = verify(pairs[miss]) if len(miss) else []
        for i, v in zip(miss.tolist(), fresh):
            tier[i], score[i], sim[i] = TIERS.index(v.tier), v.score, v.similarity
        self.verified += len(miss)  # over the calls of one match
        self.reused = n - self.verified
        out = [
            PairVerdict(a, b, TIERS[t] if t >= 0 else None, s, m)
            for a, b, t, s, m in zip(
                pairs[:, 0].tolist(), pairs[:, 1].tolist(), tier.tolist(), score.tolist(), sim.tolist()
            )
        ]
        order = np.argsort(keys, kind="stable")
        self._last = {"hashes": np.array(uniq), "keys": keys[order], "tier": tier[order],
                      "score": score[order], "similarity": sim[order]}  # fmt: skip
        changed = self._unsaved or len(miss) > 0 or cached is None or len(cached["keys"]) != n
        if save and changed:
            self._save(self._last)
        self._unsaved = changed and not save
        return out

    def _save(self, data: dict) -> None:
        """`data`: the arrays of `_last`, sorted by key."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, verifier=np.array(self.verifier_id), hashes=data["hashes"].astype(np.bytes_),
                         keys=data["keys"], tier=data["tier"], score=data["score"], similarity=data["similarity"])  # fmt: skip
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:  # a full disk or a read-only folder: this scan's verdicts stand, the next verifies again
            pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
