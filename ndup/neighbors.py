"""Candidate pairs: k nearest neighbours in embedding space (hnswlib) and exact/near hash buckets.

The only module that talks to hnswlib. Candidates are cheap and generous; `verify` decides.
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np

# HNSW build parameters: M links per node and the construction beam. Near-duplicates lie far closer
# than any other neighbour and are found at these settings (benchmarks/throughput.py plants some);
# on i.i.d. random 256-d vectors, the hardest case, recall@10 is only 0.61 at 50,000 (0.99 there
# needs M=32 and a beam of 800, several times the time: docs/benchmarks.md).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
# A perceptual-hash bucket larger than this is a degenerate hash (blank or flat images), left to the
# embedding search rather than paired all-with-all.
MAX_HASH_BUCKET = 64


# The search beam grows with the library beyond this many vectors. On vectors shaped like a photo
# library's, a beam of 64 found every planted copy among 300,000 but 99.26% among 1,000,000, where
# 128 found 99.82% for 18% more time (docs/benchmarks.md, "HNSW"); a first scan of a million photos
# spends far longer embedding them than searching.
BEAM_GROWS_FROM = 250_000


def query_ef(k: int, n: int) -> int:
    """The search beam for k nearest neighbours among n vectors: 64 (at least 2k) up to
    BEAM_GROWS_FROM vectors, then growing with the square root of n (128 at 1,000,000)."""
    return max(2 * k, 64, round(64 * math.sqrt(n / BEAM_GROWS_FROM)))


def build_index(vectors: np.ndarray, *, threads: int = 1, seed: int = 0) -> hnswlib.Index:
    n, dim = vectors.shape
    index = hnswlib.Index(space="cosine", dim=dim)
    index.init_index(max_elements=max(n, 1), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M, random_seed=seed)
    if n:
        index.add_items(vectors, np.arange(n), num_threads=threads)
    return index


def knn_pairs(
    vectors: np.ndarray,
    k: int,
    *,
    min_similarity: float,
    owners: np.ndarray | None = None,
    threads: int = 1,
    index: IndexFile | None = None,
    keys: Sequence[str] | None = None,
) -> dict[tuple[int, int], float]:
    """{(i, j): cosine} with i < j for each row's k nearest neighbours above `min_similarity`.

    `owners[row]` is the image a row belongs to (an image may have several descriptors, one per
    alignment hypothesis); pairs are between owners, with their best cosine. With `index` (and a
    stable key per row), the search goes through that persisted index, updated for what changed
    since it was saved; without, an index is built in memory for this call.
    """
    n = len(vectors)
    if n < 2:
        return {}
    owner = np.arange(n) if owners is None else np.asarray(owners)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    kk = min(k + 2, n)  # +2: each row finds itself, and perhaps its image's other hypothesis
    if index is not None and keys is not None:
        found, sims = index.search(list(keys), vectors, kk, threads=threads)
    else:
        mem = build_index(vectors, threads=threads)
        mem.set_ef(query_ef(kk, n))
        labels, distances = mem.knn_query(vectors, k=kk, num_threads=threads)
        found, sims = labels.astype(np.int64), 1.0 - distances
    return _owner_pairs(found, sims, owner, min_similarity)


def _owner_pairs(found: np.ndarray, sims: np.ndarray, owner: np.ndarray, min_similarity: float) -> dict:
    rows = np.repeat(np.arange(len(found)), found.shape[1])
    cols, s = found.ravel(), sims.ravel().astype(np.float64)
    keep = (cols >= 0) & (s >= min_similarity)
    i, j, s = owner[rows[keep]], owner[cols[keep]], s[keep]
    keep = i != j
    i, j, s = i[keep], j[keep], s[keep]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs: dict[tuple[int, int], float] = {}
    for a, b, sim in zip(lo.tolist(), hi.tolist(), s.tolist()):
        if sim > pairs.get((a, b), -2.0):
            pairs[(a, b)] = sim
    return pairs


# ---- the persisted, incrementally updated index ------------------------------------------------------
INDEX_FORMAT = 1


@dataclass
class IndexReport:
    """What the last `IndexFile.search` did (`ndup scan` reports it, tests count it)."""

    rows: int = 0
    added: int = 0
    removed: int = 0
    queried: int = 0  # rows whose neighbours were searched (the others' came from the file)
    rebuilt: bool = False
    note: str | None = None  # why it was rebuilt, when that is news to the user (damaged, other model)
    saved: bool = False


class IndexFile:
    """An HNSW index of one model's descriptors, kept in a file beside the cache and brought up to
    date on each scan: new rows are added, rows no longer wanted are marked deleted (their slots are
    reused), and each row's nearest neighbours are kept too, so that only rows near a change are
    searched again. Adding 100 photos to a library of 100,000 costs about 100 insertions and a few
    hundred searches, not a rebuild.

    Two files: `PATH` (hnswlib's own format) and `PATH.meta` (numpy: row keys, labels, cached
    neighbours, the model id, and the size and CRC-32 of PATH). Both are written to a temporary name and
    renamed; the meta goes last and names the index file it belongs to, so a crash between the two
    renames, a damaged or foreign file, or a mismatch with the cache's vectors is noticed on the next
    load: the index is then rebuilt from the cache, with a one-line note, never a crash."""

    def __init__(self, path: Path, model_id: str):
        self.path = Path(path)
        self.meta_path = Path(f"{path}.meta")
        self.model_id = model_id
        self.report = IndexReport()

    # -- files --------------------------------------------------------------------------------------
    def _load(self, dim: int) -> tuple[hnswlib.Index, dict] | str | None:
        """(index, meta), or why it cannot be used (None: there is simply none yet)."""
        if not self.path.exists() and not self.meta_path.exists():
            return None
        try:
            with open(self.meta_path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = {name: z[name] for name in z.files}
            if int(meta["format"]) != INDEX_FORMAT:
                return "it was written by another version of ndup"
            if str(meta["model_id"]) != self.model_id or int(meta["dim"]) != dim:
                return f"it holds another model's descriptors ({meta['model_id']})"
            size, crc = _file_crc(self.path)
            if size != int(meta["file_size"]) or crc != int(meta["file_crc"]):
                return "it does not match its description (damaged, or written half-way)"
            index = hnswlib.Index(space="cosine", dim=dim)
            index.load_index(str(self.path), allow_replace_deleted=True)
        except FileNotFoundError:
            return "a part of it is missing"
        except Exception as e:  # a damaged derived file (zip, numpy, hnswlib errors): rebuilt, never fatal
            return f"it cannot be read ({type(e).__name__})"
        return index, meta

    def _save(self, index: hnswlib.Index, meta: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.path.name}"
        for name in os.listdir(self.path.parent):  # temporary files left by a killed scan
            if name.startswith(prefix) and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    (self.path.parent / name).unlink()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp_meta = self.path.with_name(f".{self.meta_path.name}.{os.getpid()}.tmp")
        try:
            index.save_index(str(tmp))
            _fsync(tmp)
            meta["file_size"], meta["file_crc"] = _file_crc(tmp)
            os.replace(tmp, self.path)
            with open(tmp_meta, "wb") as f:
                np.savez(f, **meta)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_meta, self.meta_path)
            _fsync_dir(self.path.parent)
        finally:
            for t in (tmp, tmp_meta):
                with contextlib.suppress(OSError):
                    t.unlink()

    def remove(self) -> None:
        for p in (self.meta_path, self.path):  # the meta first: an index without one is never used
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # -- search -------------------------------------------------------------------------------------
    def search(
        self, keys: list[str], vectors: np.ndarray, k: int, *, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's k nearest rows among `vectors` (unit rows, one stable key each): (positions,
        cosines), both (n, k), -1 where fewer were found. The file is updated to hold exactly these rows."""
        n, dim = vectors.shape
        self.report = IndexReport(rows=n)
        loaded = self._load(dim)
        if isinstance(loaded, tuple):
            index, meta = loaded
            state = self._update(index, meta, keys, vectors, k, threads)
            if state is None:  # the file and the cache disagree: start again
                loaded = "its vectors differ from the cache's"
        if not isinstance(loaded, tuple) or state is None:
            if isinstance(loaded, str):
                self.report.note = f"the search index {self.path} was rebuilt: {loaded}"
            state = self._build(keys, vectors, k, threads)
        index, meta, changed = state
        if changed:
            try:
                self._save(index, meta)
                self.report.saved = True
            except OSError as e:  # a full disk or a read-only cache folder: this scan's results stand
                self.report.note = f"the search index could not be saved ({e.strerror or e}); the next scan rebuilds it"
        label_pos = np.full(int(meta["next_label"]) + 1, -1, dtype=np.int64)
        label_pos[meta["labels"]] = np.arange(len(meta["labels"]))
        row_of_key = {key: i for i, key in enumerate(keys)}
        order = np.array([row_of_key[key] for key in meta["keys"].astype(str)], dtype=np.int64)
        positions = np.full((n, k), -1, dtype=np.int64)
        sims = np.full((n, k), -2.0, dtype=np.float32)
        knn = meta["knn"][:, :k]
        found = np.where(knn >= 0, label_pos[np.clip(knn, 0, None)], -1)
        positions[order] = np.where(found >= 0, order[np.clip(found, 0, None)], -1)
        sims[order] = meta["sims"][:, :k]
        return positions, sims

    def _build(self, keys, vectors, k, threads) -> tuple[hnswlib.Index, dict, bool]:
        n, dim = vectors.shape
        index = hnswlib.Index(space="cosine", dim=dim)
        index.init_index(max_elements=max(n, 16), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M,
                         random_seed=0, allow_replace_deleted=True)  # fmt: skip
        index.add_items(vectors, np.arange(n), num_threads=threads)
        self.report.rebuilt, self.report.added = True, n
        meta = {
            "format": np.array(INDEX_FORMAT),
            "model_id": np.array(self.model_id),
            "dim": np.array(dim),
            "k": np.array(k),
            "next_label": np.array(n),
            "keys": np.array(keys, dtype=np.bytes_),
            "labels": np.arange(n, dtype=np.int64),
        }
        knn, sims = self._query(index, vectors, k, n, threads)
        meta["knn"], meta["sims"] = knn, sims
        return index, meta, True

    def _query(self, index, vectors, k, live, threads) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, live)
        knn = np.full((len(vectors), k), -1, dtype=np.int64)
        sims = np.full((len(vectors), k), -2.0, dtype=np.float32)
        if len(vectors) and kk:
            index.set_ef(query_ef(kk, live))
            try:
                labels, distances = index.knn_query(vectors, k=kk, num_threads=threads)
            except RuntimeError:  # fewer than k reachable past deleted rows: search wider
                index.set_ef(max(4 * query_ef(kk, live), min(live, 2000)))
                labels, distances = index.knn_query(vectors, k=kk, num_threads=threads)
            knn[:, :kk], sims[:, :kk] = labels, 1.0 - distances
        self.report.queried += len(vectors)
        return knn, sims

    def _update(self, index, meta, keys, vectors, k, threads):
        old_keys = meta["keys"].astype(str)
        old_labels = meta["labels"]
        row_of_key = {key: i for i, key in enumerate(keys)}
        keep = np.array([key in row_of_key for key in old_keys], dtype=bool)
        kept_rows = np.array([row_of_key[key] for key in old_keys[keep]], dtype=np.int64)
        # The same key must mean the same vector: spot-check some against the cache's.
        if len(kept_rows):
            sample = np.linspace(0, len(kept_rows) - 1, num=min(16, len(kept_rows))).astype(np.int64)
            try:
                stored = np.asarray(index.get_items(old_labels[keep][sample]), dtype=np.float32)
            except RuntimeError:
                return None
            if stored.shape != (len(sample), vectors.shape[1]):
                return None
            if np.abs(stored - vectors[kept_rows[sample]]).max() > 1e-3:
                return None
        gone = old_labels[~keep]
        for label in gone.tolist():
            index.mark_deleted(int(label))
        old_set = set(old_keys[keep].tolist())
        new_rows = np.array([i for i, key in enumerate(keys) if key not in old_set], dtype=np.int64)
        next_label = int(meta["next_label"])
        new_labels = np.arange(next_label, next_label + len(new_rows), dtype=np.int64)
        if len(new_rows):
            needed = index.element_count + len(new_rows)
            if needed > index.max_elements:
                index.resize_index(max(needed, index.max_elements + index.max_elements // 2))
            index.add_items(vectors[new_rows], new_labels, num_threads=threads, replace_deleted=True)
        self.report.added, self.report.removed = len(new_rows), len(gone)
        labels = np.concatenate([old_labels[keep], new_labels])
        rows = np.concatenate([kept_rows, new_rows])
        cached_k = int(meta["k"])
        knn = np.full((len(labels), k), -1, dtype=np.int64)
        sims = np.full((len(labels), k), -2.0, dtype=np.float32)
        m = min(k, cached_k)
        knn[: len(kept_rows), :m] = meta["knn"][keep][:, :m]
        sims[: len(kept_rows), :m] = meta["sims"][keep][:, :m]
        # Searched again: new rows; rows that had a removed row among their neighbours; rows the new
        # rows found (a new row may now be among their nearest); every row when k grew.
        again = np.zeros(len(labels), dtype=bool)
        again[len(kept_rows) :] = True
        if cached_k < k:
            again[:] = True
        if len(gone):
            again[: len(kept_rows)] |= np.isin(knn[: len(kept_rows)], gone).any(axis=1)
        live = len(labels)
        if len(new_rows):
            found, _ = self._query(index, vectors[new_rows], k, live, threads)
            knn[len(kept_rows) :], sims[len(kept_rows) :] = found, _
            again[len(kept_rows) :] = False
            again |= np.isin(labels, found[found >= 0])
            # k-NN is not symmetric: a new row can be nearer to a kept row than that row's k-th
            # neighbour without being found by the new row's own search. Compared directly when that is
            # cheap (a few hundred new photos in a library of 100,000), so that an update finds what a
            # search from scratch finds.
            if len(kept_rows) and len(new_rows) * len(kept_rows) <= REVERSE_CHECK_PAIRS:
                again[: len(kept_rows)] |= _nearer_than_kth(
                    vectors[kept_rows], vectors[new_rows], sims[: len(kept_rows), k - 1]
                )
        if again.any():
            found, s = self._query(index, vectors[rows[again]], k, live, threads)
            knn[again], sims[again] = found, s
        if not (len(new_rows) or len(gone) or again.any()):
            return index, meta, False
        meta = {**meta, "k": np.array(k), "next_label": np.array(next_label + len(new_rows)),
                "keys": np.array([keys[r] for r in rows.tolist()], dtype=np.bytes_), "labels": labels, "knn": knn,
                "sims": sims}  # fmt: skip
        return index, meta, True


# Above this many (kept row, new row) products an update only searches again the rows the new rows found.
REVERSE_CHECK_PAIRS = 50_000_000


def _nearer_than_kth(kept: np.ndarray, new: np.ndarray, kth: np.ndarray) -> np.ndarray:
    """Which kept rows have some new row nearer than their k-th neighbour (cosine `kth`; -2: none)."""
    best = np.full(len(kept), -2.0, dtype=np.float32)
    step = max(1, (1 << 24) // len(kept))  # at most 16M products (64 MB) at a time
    for i in range(0, len(new), step):
        np.maximum(best, (kept @ new[i : i + step].T).max(axis=1), out=best)
    return best > kth + 1e-6


def _file_crc(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync(path)


def exact_pairs(keys: Sequence[str | None]) -> set[tuple[int, int]]:
    """Pairs of items with equal keys; each bucket as a star around its first item (equality is transitive)."""
    first: dict[str, int] = {}
    pairs = set()
    for i, key in enumerate(keys):
        if key is None:
            continue
        j = first.setdefault(key, i)
        if j != i:
            pairs.add((j, i))
    return pairs


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_hash_pairs(hashes: Sequence[int], max_distance: int) -> set[tuple[int, int]]:
    """Pairs of 64-bit hashes within `max_distance` bits, by multi-index hashing.

    Split into max_distance + 1 bands: two hashes that close agree exactly on at least one band
    (pigeonhole), so only items sharing a band value are compared.
    """
    bands = max_distance + 1
    edges = [round(64 * b / bands) for b in range(bands + 1)]
    pairs = set()
    for b in range(bands):
        lo, width = edges[b], edges[b + 1] - edges[b]
        mask = (1 << width) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, h in enumerate(hashes):
            buckets[(h >> lo) & mask].append(i)
        for members in buckets.values():
            if len(members) < 2 or len(members) > MAX_HASH_BUCKET:
                continue
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    i, j = members[x], members[y]
                    if hamming(hashes[i], hashes[j]) <= max_distance:
                        pairs.add((i, j))
    return pairs
