"""A large unchanged library for the rescan benchmark: small files whose facts and embeddings are
written straight into the cache, as a finished cold scan would have left them.

A cold scan of 100,000 files would take hours on a small machine; what a warm rescan does with them
(walk, stat, look up, load, match, plan) does not depend on how the cache was filled. The files are
small and distinct (each its own content); they are never read by the rescan, which is the point.

The embeddings are made to look like a photo library's, not like random vectors: each is a mix of
two or three real descriptors of the pool's photos plus noise, so that nearest neighbours have the
cosines real libraries show (many candidates above the search floor of 0.5, which the verifier then
examines) without being copies of each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np

from ndup import structure
from ndup.config import ScanSettings
from ndup.decode import DECODE_VERSION, analyze
from ndup.records import Decoded, FileEntry, ImageFacts
from ndup.scan import embedder_model_id, load_embedder
from ndup.store import Store

NOISE = 0.9  # norm of the noise added to a unit mix of real descriptors (checked: see real_stats)


def pool_descriptors(pool: Path, cache: Path) -> np.ndarray:
    """The shipped model's descriptors of the pool's photos (computed once, kept in `cache`)."""
    if cache.exists():
        return np.load(cache)
    settings = ScanSettings(roots=(), device="cpu")
    embedder = load_embedder(settings)
    decoded = [d for p in sorted(pool.iterdir()) if isinstance(d := analyze(str(p)), Decoded)]
    out = []
    for i in range(0, len(decoded), 32):
        batch = decoded[i : i + 32]
        pixels = np.stack([d.pixels for d in batch])
        aspects = np.array([d.facts.width / d.facts.height for d in batch], dtype=np.float32)
        out.append(embedder.embed(pixels, aspects)["vector"])
    vectors = np.concatenate(out).astype(np.float32)
    np.save(cache, vectors)
    return vectors


def synthetic(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(real), size=(n, 3))
    weights = rng.dirichlet((1.0, 1.0, 1.0), size=n).astype(np.float32)
    mix = np.einsum("nk,nkd->nd", weights, real[picks])
    mix /= np.linalg.norm(mix, axis=1, keepdims=True)
    noise = rng.standard_normal(mix.shape).astype(np.float32)
    noise *= NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
    v = mix + noise
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def seed_cache(lib: Path, db: Path, n: int, pool: Path, seed: int) -> dict:
    """n small files under `lib` (1,000 per folder) and a cache at `db` that holds them all."""
    marker = lib / ".seeded.json"
    if marker.exists() and db.exists() and json.loads(marker.read_text()).get("n") == n:
        return json.loads(marker.read_text())
    for f in db.parent.glob(db.name + "*"):
        f.unlink()
    rng = np.random.default_rng(seed)
    real = pool_descriptors(pool, db.parent / "pool-descriptors.npy")
    vectors = synthetic(real, n, rng)
    settings = ScanSettings(roots=(lib,), db_path=db)
    model_id = embedder_model_id(settings)
    r = random.Random(seed)
    batch, embeddings = [], {}
    with Store.open(db) as store:
        for i in range(n):
            path = lib / f"{i // 1000:03d}" / f"IMG_{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = b"\xff\xd8\xff\xe0" + i.to_bytes(8, "little") + r.randbytes(52)
            path.write_bytes(data)
            st = os.stat(path)
            h = hashlib.sha256(data).hexdigest()
            facts = ImageFacts(content_hash=h, format="JPEG", width=4000, height=3000,
                               phash=f"{r.getrandbits(64):016x}", dhash=f"{r.getrandbits(64):016x}", quality=90,
                               exif_tags=20, sharpness=100.0, clipped=0.01)  # fmt: skip
            entry = FileEntry(str(path), st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
            batch.append((entry, Decoded(str(path), st.st_size, st.st_mtime_ns, facts, None)))
            thumb = rng.integers(0, 256, size=(36, 48), dtype=np.uint8)
            embeddings[h] = (vectors[i], {"phash": facts.phash, "orientation": 0}, structure.encode(thumb))
            if len(batch) == 5000:
                store.write_batch(batch, embeddings, model_id, DECODE_VERSION)
                batch, embeddings = [], {}
        if batch:
            store.write_batch(batch, embeddings, model_id, DECODE_VERSION)
    sims = vectors[:2000] @ vectors.T
    np.fill_diagonal(sims[:, :2000], -1)
    stats = {"n": n, "nn1_cos_median": float(np.median(sims.max(axis=1))),
             "nn10_cos_median": float(np.median(np.sort(sims, axis=1)[:, -10])),
             "real_nn1_cos_median": float(np.median(np.sort(real @ real.T, axis=1)[:, -2]))}  # fmt: skip
    marker.write_text(json.dumps(stats))
    return stats
