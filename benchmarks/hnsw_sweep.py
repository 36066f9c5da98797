"""HNSW settings against recall@10 on i.i.d. random unit vectors, the hardest case for the index.

    python benchmarks/hnsw_sweep.py --vectors 50000

For each (M, ef_construction) the index is built once, then searched with several beams (ef);
recall@10 is measured against brute force on a sample of queries. Times are reported as ratios to
the shipped settings (ndup.neighbors: HNSW_M, HNSW_EF_CONSTRUCTION, query_ef) measured in the same
run, because shared machines are noisy. Real embeddings of a photo library are far easier: they lie
on a low-dimensional surface, and near-duplicates are much closer than any other neighbour.
"""

from __future__ import annotations

import argparse
import time

import hnswlib
import numpy as np

from ndup.neighbors import HNSW_EF_CONSTRUCTION, HNSW_M, query_ef

K = 10


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.vectors, args.dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    queries = data[rng.choice(args.vectors, args.queries, replace=False)]
    truth = np.argsort(-(queries @ data.T), axis=1)[:, : K + 1]  # +1: each query finds itself
    default_ef = query_ef(K + 2, args.vectors)
    settings = [(HNSW_M, HNSW_EF_CONSTRUCTION, (default_ef, 200, 500)), (32, 300, (100, 300, 800))]
    rows, base_build, base_query = [], None, None
    for m, ef_construction, beams in settings:
        index = hnswlib.Index(space="cosine", dim=args.dim)
        index.init_index(max_elements=args.vectors, ef_construction=ef_construction, M=m, random_seed=0)
        started = time.perf_counter()
        index.add_items(data, num_threads=args.threads)
        build = time.perf_counter() - started
        base_build = base_build or build
        for ef in beams:
            index.set_ef(ef)
            started = time.perf_counter()
            found, _ = index.knn_query(queries, k=K + 1, num_threads=1)
            query = time.perf_counter() - started
            base_query = base_query or query
            recall = np.mean([len(set(f) & set(t)) / (K + 1) for f, t in zip(found, truth)])
            rows.append((m, ef_construction, ef, recall, build / base_build, query / base_query))
    print(f"{args.vectors:,} random {args.dim}-d unit vectors, {args.queries} queries, recall@{K} vs brute force")
    print("| M | ef_construction | ef | recall@10 | build time (x shipped) | query time (x shipped) |")
    print("|---|---|---|---|---|---|")
    for m, efc, ef, recall, build, query in rows:
        print(f"| {m} | {efc} | {ef} | {recall:.3f} | {build:.2f} | {query:.2f} |")
    per_query = base_query / args.queries * 1000
    print(f"shipped settings here: build {base_build:.1f} s on {args.threads} thread(s), {per_query:.2f} ms a query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
