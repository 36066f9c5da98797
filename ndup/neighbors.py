"""Candidate pairs: k nearest neighbours in embedding space (hnswlib) and exact/near hash buckets.

The only module that talks to hnswlib. Candidates are cheap and generous; `verify` decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import hnswlib
import numpy as np

# HNSW build parameters: M links per node and the construction beam. These give recall@10 above
# 0.99 against brute force on random 256-d vectors (benchmarks/throughput.py measures it).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
# A perceptual-hash bucket larger than this is a degenerate hash (blank or flat images), left to the
# embedding search rather than paired all-with-all.
MAX_HASH_BUCKET = 64


def query_ef(k: int, n: int) -> int:
    """The search beam for k nearest neighbours among n vectors."""
    return max(2 * k, 64)


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
) -> dict[tuple[int, int], float]:
    """{(i, j): cosine} with i < j for each row's k nearest neighbours above `min_similarity`.

    `owners[row]` is the image a row belongs to (an image may have several descriptors, one per
    alignment hypothesis); pairs are between owners, with their best cosine.
    """
    n = len(vectors)
    if n < 2:
        return {}
    owner = np.arange(n) if owners is None else np.asarray(owners)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = build_index(vectors, threads=threads)
    k = min(k + 2, n)  # +2: each row finds itself, and perhaps its image's other hypothesis
    index.set_ef(query_ef(k, n))
    labels, distances = index.knn_query(vectors, k=k, num_threads=threads)
    pairs: dict[tuple[int, int], float] = {}
    for row in range(n):
        i = int(owner[row])
        for found, dist in zip(labels[row], distances[row]):
            j = int(owner[int(found)])
            sim = 1.0 - float(dist)
            if j == i or sim < min_similarity:
                continue
            key = (i, j) if i < j else (j, i)
            if sim > pairs.get(key, -2.0):
                pairs[key] = sim
    return pairs


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
