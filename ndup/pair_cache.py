"""Verdicts of candidate pairs remembered between scans, so that a rescan verifies only new pairs.

A pair's verdict depends only on the two contents (their facts, descriptors and aligned thumbnails,
all keyed by content hash) and on the verifier (model id, variant, threshold, the digest of the
whole weights file for the decision unit, the decoder's version, this module's version: see
`ndup.scan.verifier_id`), so it can be reused for as long as both contents are in the library. Without this, every
rescan of an unchanged library of 100,000 photos would verify about a million candidate pairs again.

Derived data in one file beside the cache (`CACHE.pairs`, numpy): written to a temporary name and
renamed; a missing, damaged or foreign file only means the pairs are verified again. Verifying a large
library takes hours on a CPU, so while it runs the file is rewritten every CHECKPOINT_SECONDS with
everything verified so far, and once more when the scan is stopped (Ctrl-C): a killed cron job or a
power cut loses at most that much work, and the next scan carries on where the last one stopped.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ndup.records import PairVerdict

# Bump when what a verdict depends on changes in code (features, thresholds, tiers).
PAIR_CACHE_VERSION = 1
TIERS: tuple[str | None, ...] = (None, "exact", "copy", "similar")
# Pairs are verified this many at a time: the unit of progress and of checkpoints.
VERIFY_CHUNK = 512
CHECKPOINT_SECONDS = 60.0


@dataclass(frozen=True)
class _Table:
    """Verdicts keyed by pairs of contents: `hashes` sorted and unique, `keys` = first * len(hashes) +
    second (indices into `hashes`), sorted; the other columns in the order of `keys`."""

    hashes: np.ndarray
    keys: np.ndarray
    tier: np.ndarray
    score: np.ndarray
    similarity: np.ndarray

    @classmethod
    def empty(cls) -> _Table:
        return cls(np.array([], dtype=str), np.zeros(0, np.int64), np.zeros(0, np.int8), *np.zeros((2, 0), np.float32))

    @classmethod
    def of(cls, uniq: np.ndarray, keys: np.ndarray, tier, score, similarity) -> _Table:
        """From keys over `uniq` (sorted, unique) in any order; a repeated key keeps its first row."""
        keys, first = np.unique(keys, return_index=True)
        return cls(uniq, keys, tier[first], score[first], similarity[first])

    def __len__(self) -> int:
        return len(self.keys)

    def rekeyed(self, hashes: np.ndarray) -> np.ndarray:
        """These keys over `hashes`, a sorted superset of this table's."""
        width = max(len(self.hashes), 1)
        pos = np.searchsorted(hashes, self.hashes)
        return pos[self.keys // width] * len(hashes) + pos[self.keys % width]

    def merged(self, newer: _Table) -> _Table:
        """Both tables' verdicts; `newer` wins where both know a pair."""
        if not len(self):
            return newer
        hashes = np.union1d(self.hashes, newer.hashes)
        return _Table.of(
            hashes,
            np.concatenate([newer.rekeyed(hashes), self.rekeyed(hashes)]),
            *(np.concatenate([getattr(newer, c), getattr(self, c)]) for c in ("tier", "score", "similarity")),
        )

    def lookup(self, uniq: np.ndarray, first: np.ndarray, second: np.ndarray):
        """Rows for the pairs (uniq[first], uniq[second]): (found, tier, score, similarity)."""
        n = len(first)
        found = np.zeros(n, dtype=bool)
        tier, score, sim = np.full(n, -1, np.int8), np.zeros(n, np.float32), np.zeros(n, np.float32)
        if not len(self) or not n:
            return found, tier, score, sim
        pos = np.searchsorted(self.hashes, uniq).clip(0, len(self.hashes) - 1)
        remap = np.where(self.hashes[pos] == uniq, pos, -1)  # uniq -> this table's index, -1 if unknown
        ia, ib = remap[first], remap[second]
        known = (ia >= 0) & (ib >= 0)
        want = np.where(known, ia * len(self.hashes) + ib, -1)
        at = np.searchsorted(self.keys, want).clip(0, len(self.keys) - 1)
        found = known & (self.keys[at] == want)
        tier[found], score[found], sim[found] = self.tier[at[found]], self.score[at[found]], self.similarity[at[found]]
        return found, tier, score, sim


def stored_verifier(verifier_id: str) -> str:
    """What a pair file records as its verifier: the scan's verifier id and this module's version."""
    return f"{PAIR_CACHE_VERSION}|{verifier_id}"


def file_verifier(path: Path) -> str | None:
    """The verifier a pair file's verdicts belong to (`stored_verifier`'s form); None when there is no
    readable file."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            return str(z["verifier"])
    except Exception:  # missing or damaged
        return None


class PairCache:
    """`path` None: verdicts are only remembered for the life of this object."""

    def __init__(self, path: Path | None, verifier_id: str, checkpoint_seconds: float = CHECKPOINT_SECONDS):
        self.path = None if path is None else Path(path)
        self.verifier_id = stored_verifier(verifier_id)
        self.checkpoint_seconds = checkpoint_seconds
        self.reused = 0
        self.verified = 0
        self._known: _Table | None = None  # the file's verdicts and every one verified since, merged
        self._saved_rows = -1  # rows in the file, -1 when it may hold something else
        self._dirty = False  # verdicts verified since the file was last written

    def _load(self) -> _Table:
        if self._known is not None:
            return self._known
        self._known = _Table.empty()
        if self.path is None:
            return self._known
        try:
            with open(self.path, "rb") as f, np.load(f, allow_pickle=False) as z:
                data = {name: z[name] for name in z.files}
            n = len(data["keys"])
            if str(data["verifier"]) == self.verifier_id and all(
                len(data[c]) == n for c in ("tier", "score", "similarity")
            ):
                hashes = data["hashes"].astype(str)
                self._known = _Table(hashes, data["keys"].astype(np.int64), data["tier"].astype(np.int8),
                                     data["score"], data["similarity"])  # fmt: skip
                self._saved_rows = n
        except Exception:  # missing or damaged: verify again
            pass
        return self._known

    def verdicts(
        self,
        hashes: Sequence[str],
        pairs: np.ndarray,
        verify: Callable[[np.ndarray], list[PairVerdict]],
        save: bool = True,
        on_start: Callable[[int], None] | None = None,
        on_verified: Callable[[int], None] | None = None,
    ) -> list[PairVerdict]:
        """Verdicts of `pairs` (indices into `hashes`, the images' content hashes): known ones reused,
        the others from `verify(some of those pairs)`, VERIFY_CHUNK at a time. With `save` the file then
        holds exactly these pairs (verdicts of contents gone or of pairs no longer candidates are
        dropped); without it the file is left alone apart from checkpoints, and a later call still
        reuses this call's verdicts. `on_start(count to verify)` and `on_verified(count)` report progress."""
        uniq, img = np.unique(np.asarray(hashes, dtype=str), return_inverse=True)
        img = img.astype(np.int64).reshape(-1)
        first, second = img[pairs[:, 0]], img[pairs[:, 1]]
        hit, tier, score, sim = self._load().lookup(uniq, first, second)
        miss = np.flatnonzero(~hit)
        if on_start is not None and len(miss):
            on_start(len(miss))
        keys = first * len(uniq) + second

        def learned(upto: int) -> None:
            """Merge what this call verified so far (miss[:upto]) into what is known."""
            done = miss[:upto]
            self._known = self._known.merged(_Table.of(uniq, keys[done], tier[done], score[done], sim[done]))

        last_save, done = time.monotonic(), 0
        try:
            for start in range(0, len(miss), VERIFY_CHUNK):
                part = miss[start : start + VERIFY_CHUNK]
                for i, v in zip(part.tolist(), verify(pairs[part])):
                    tier[i], score[i], sim[i] = TIERS.index(v.tier), v.score, v.similarity
                done, self._dirty = start + len(part), True
                if on_verified is not None:
                    on_verified(len(part))
                if time.monotonic() - last_save >= self.checkpoint_seconds:
                    learned(done)
                    self._save(self._known)  # everything known, so a kill now keeps all of it
                    last_save = time.monotonic()
        except BaseException:  # Ctrl-C or a failure: what was verified is kept for the next scan
            if done:
                learned(done)
                self._save(self._known)
            raise
        if len(miss):
            learned(len(miss))
        self.verified += len(miss)  # over the calls of one match
        self.reused = len(pairs) - self.verified
        if save:
            table = _Table.of(uniq, keys, tier, score, sim)
            if self._dirty or self._saved_rows != len(table):
                self._save(table)
        return [
            PairVerdict(a, b, TIERS[t] if t >= 0 else None, s, m)
            for a, b, t, s, m in zip(
                pairs[:, 0].tolist(), pairs[:, 1].tolist(), tier.tolist(), score.tolist(), sim.tolist()
            )
        ]

    def _save(self, table: _Table) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, verifier=np.array(self.verifier_id), hashes=table.hashes.astype(np.bytes_),
                         keys=table.keys, tier=table.tier, score=table.score, similarity=table.similarity)  # fmt: skip
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._saved_rows, self._dirty = len(table), False
        except OSError:  # a full disk or a read-only folder: this scan's verdicts stand, the next verifies again
            pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
