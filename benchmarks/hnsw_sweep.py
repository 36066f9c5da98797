"""HNSW settings against recall@10, on i.i.d. random unit vectors (the hardest case for the index) or
on vectors shaped like a photo library's.

    python benchmarks/hnsw_sweep.py --vectors 50000
    python benchmarks/hnsw_sweep.py --vectors 300000 --photo-like --settings 16:200:64,128 16:100:64,128

For each (M, ef_construction) the index is built once, then searched with several beams (ef);
recall@10 is measured against brute force on a sample of queries, and the planted near-copies
(benchmarks/throughput.py plants them) found among each other's 10 nearest are counted. Times are
reported as ratios to the first setting (by default the shipped one: ndup.neighbors' HNSW_M,
HNSW_EF_CONSTRUCTION and query_ef) measured in the same run, because shared machines are noisy, and
as seconds for the whole build and for every vector's 10 nearest neighbours (extrapolated from the
sample). Real embeddings of a photo library are far easier than random vectors: they lie on a
low-dimensional surface, and near-duplicates are much closer than any other neighbour.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import hnswlib
import numpy as np
from throughput import DEFAULT_POOL, exact_neighbours, hnsw_vectors, planted_found, recall_of

from ndup.neighbors import HNSW_EF_CONSTRUCTION, HNSW_M, query_ef

K = 10


def setting(text: str) -> tuple[int, int, tuple[int, ...]]:
    """Parses "M:EF_CONSTRUCTION:EF,EF,..." into (M, ef_construction, beams)."""
    m, efc, beams = text.split(":")
    return int(m), int(efc), tuple(int(b) for b in beams.split(","))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--photo-like", action="store_true", help="vectors as benchmarks/throughput.py --photo-like makes them"
    )
    p.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="the photo pool (for --photo-like)")
    p.add_argument("--work", type=Path, default=Path("/tmp/ndup-hnsw-sweep"), help="keeps the pool's descriptors")
    p.add_argument("--settings", nargs="+", type=setting, default=None, metavar="M:EFC:EF,EF",
                   help="index settings to compare, the first as the baseline [the shipped ones, then 32:300]")  # fmt: skip
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data, planted = hnsw_vectors(args.vectors, args.photo_like, args.pool, args.work, rng)
    sample = rng.choice(args.vectors, args.queries, replace=False)
    exact = exact_neighbours(data, sample, K)
    default_ef = query_ef(K + 2, args.vectors)
    settings = args.settings or [(HNSW_M, HNSW_EF_CONSTRUCTION, (default_ef, 200, 500)), (32, 300, (100, 300, 800))]
    rows, base_build, base_query = [], None, None
    for m, ef_construction, beams in settings:
        index = hnswlib.Index(space="cosine", dim=data.shape[1])
        index.init_index(max_elements=args.vectors, ef_construction=ef_construction, M=m, random_seed=0)
        started = time.perf_counter()
        index.add_items(data, num_threads=args.threads)
        build = time.perf_counter() - started
        base_build = base_build or build
        for ef in beams:
            index.set_ef(ef)
            started = time.perf_counter()
            labels, _ = index.knn_query(data[sample], k=K + 1, num_threads=args.threads)
            query = time.perf_counter() - started
            base_query = base_query or query
            recall = recall_of(labels, sample, exact)
            found = planted_found(index, data, planted, K, args.threads)
            every = query / len(sample) * args.vectors
            rows.append((m, ef_construction, ef, recall, found, build / base_build, query / base_query, build, every))
    kind = "photo-like" if args.photo_like else "random"
    print(f"{args.vectors:,} {kind} {data.shape[1]}-d unit vectors, {args.queries} queries, recall@{K} vs brute force, "
          f"{len(planted):,} planted copies, {args.threads} thread(s)")  # fmt: skip
    print("| M | ef_construction | ef | recall@10 | planted copies found | build (x first) | query (x first) "
          "| build | 10-NN of every vector |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for m, efc, ef, recall, found, build, query, build_s, every_s in rows:
        print(f"| {m} | {efc} | {ef} | {recall:.3f} | {found:.4f} | {build:.2f} | {query:.2f} | {build_s:.0f} s "
              f"| {every_s:.0f} s |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
