"""The scan pipeline: walk -> read what changed -> embed -> match -> group -> plan, all cached."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ndup import neighbors
from ndup.captures import apply_captures
from ndup.config import ScanSettings
from ndup.decode import DECODE_VERSION, analyze
from ndup.errors import NdupError
from ndup.group import build_groups
from ndup.plan import make_plan
from ndup.policy import keeper_policies
from ndup.records import Decoded, Failure, FileEntry, ImageRecord, Outcome, Plan
from ndup.store import Store
from ndup.verify import PairFeatures, ThresholdVerifier
from ndup.walk import walk
from ndup.workers import default_workers, ordered_map

# The loosest cosine that can still be a similar shot: looser neighbours are not even looked at.
CANDIDATE_MIN_COSINE = 0.5
# Two images whose perceptual hashes differ by at most this many bits are candidates regardless.
PHASH_CANDIDATE_BITS = 6


class Progress:
    """What the pipeline tells whoever watches it; the CLI renders it with Rich, tests ignore it."""

    def stage(self, name: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


@dataclass
class Counts:
    files_seen: int = 0
    images: int = 0
    decoded: int = 0  # files read and decoded in this run (0 on an unchanged rescan)
    embedded: int = 0
    not_images: int = 0
    failures: int = 0
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)


def _check_roots(roots: Sequence[Path]) -> list[Path]:
    if not roots:
        raise NdupError("no folder to scan", hint="name one or more folders, e.g. ndup scan ~/Photos", exit_code=2)
    out = []
    for root in roots:
        p = Path(root).expanduser()
        if not p.exists():
            raise NdupError(f"no such file or folder: {p}", hint="check the path", exit_code=2)
        if not os.access(p, os.R_OK):
            raise NdupError(f"cannot read {p}: permission denied", hint="check its permissions")
        out.append(p.absolute())
    return out


def _batches(items: Iterator[tuple[FileEntry, Outcome]], size: int) -> Iterator[list[tuple[FileEntry, Outcome]]]:
    batch: list[tuple[FileEntry, Outcome]] = []
    images = 0
    for item in items:
        batch.append(item)
        images += isinstance(item[1], Decoded)
        # Count only images towards the batch, so batches fill the model; cap the rest for latency.
        if images >= size or len(batch) >= 8 * size:
            yield batch
            batch, images = [], 0
    if batch:
        yield batch


def _decoder_crashed(path: str) -> Failure:
    return Failure(path, "the decoder crashed on this file (its worker process died); it is skipped until it changes")


def _read_changed(entries: list[FileEntry], workers: int) -> Iterator[tuple[FileEntry, Outcome]]:
    paths = (e.path for e in entries)
    outcomes = ordered_map(analyze, paths, workers, in_flight=8 * max(workers, 1), crashed=_decoder_crashed)
    try:
        yield from zip(entries, outcomes)
    except BrokenProcessPool as e:  # not one file's doing: new worker processes die at once
        raise NdupError(
            f"the worker processes that read files cannot run ({e})", hint="try --workers 1, and check free memory"
        ) from None


@functools.lru_cache(maxsize=2)
def _cached_embedder(device: str, weights: Path | None):
    from ndup.model.embed import Embedder

    return Embedder(device)


def load_embedder(settings: ScanSettings):
    """The network, loaded once per process and only when some file needs embedding."""
    return _cached_embedder(settings.device, settings.weights)


def embedder_model_id(settings: ScanSettings) -> str:
    from ndup.model.spec import model_id

    return model_id(settings.weights)


def run_scan(
    settings: ScanSettings,
    progress: Progress | None = None,
    embedder_factory: Callable[[ScanSettings], object] = load_embedder,
) -> Plan:
    """Scan `settings.roots`, update the cache, and return (and store) a new plan."""
    progress = progress or Progress()
    started = time.monotonic()
    roots = _check_roots(settings.roots)
    with Store.open(settings.db_path, check=True) as store:
        run_id = store.begin_run([str(r) for r in roots], _settings_record(settings))
        try:
            plan = _scan(store, run_id, roots, settings, progress, embedder_factory, started)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a full disk must not hide what stopped the scan
                store.finish_run(run_id, "interrupted")
            raise
        store.save_plan(plan)
        return plan


def _settings_record(settings: ScanSettings) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items() if k != "roots"}


def _scan(store, run_id, roots, settings, progress, embedder_factory, started) -> Plan:
    counts = Counts()
    walk_failures: list[Failure] = []
    entries: list[FileEntry] = []
    progress.stage("Finding files")
    for item in walk(roots, hidden=settings.hidden, follow_links=settings.follow_links, excludes=settings.excludes):
        if isinstance(item, Failure):
            walk_failures.append(item)
        else:
            entries.append(item)
            progress.advance()
    counts.files_seen = len(entries)

    model_id = embedder_model_id(settings)
    cached = store.cached_stats()
    embedded = store.embedded_hashes(model_id)
    todo: list[FileEntry] = []
    for e in entries:
        c = cached.get(e.path)
        if c is None or c.size != e.size or c.mtime_ns != e.mtime_ns or c.decoder_version != DECODE_VERSION:
            todo.append(e)
        elif c.kind == "image" and c.content_hash not in embedded:
            todo.append(e)  # facts are current but this model has not seen the file yet

    if todo:
        workers = settings.workers or default_workers()
        embedder = None
        progress.stage("Reading images", total=len(todo))
        for batch in _batches(_read_changed(todo, workers), settings.batch_size):
            new = {}
            fresh = [o for _, o in batch if isinstance(o, Decoded) and o.facts.content_hash not in embedded]
            for o in fresh:
                new.setdefault(o.facts.content_hash, o.pixels)
            vectors: dict[str, np.ndarray] = {}
            if new:
                embedder = embedder or embedder_factory(settings)
                out = embedder.embed(np.stack(list(new.values())))
                vectors = dict(zip(new.keys(), out))
                embedded.update(vectors)
            store.write_batch(batch, vectors, model_id, DECODE_VERSION)
            counts.decoded += sum(isinstance(o, Decoded) for _, o in batch)
            counts.embedded += len(vectors)
            progress.advance(len(batch))

    progress.stage("Matching")
    paths = [e.path for e in entries]
    images = store.image_records(paths)
    failures = walk_failures + store.failures(paths)
    counts.images = len(images)
    counts.failures = len(failures)
    counts.not_images = counts.files_seen - counts.images - (len(failures) - len(walk_failures))
    clusters = match(images, store.embeddings((im.facts.content_hash for im in images), model_id), settings)
    counts.elapsed_s = round(time.monotonic() - started, 3)
    summary = {k: v for k, v in asdict(counts).items() if k != "extra"}
    summary["model"] = model_id
    progress.done()
    policy, pick = keeper_policies(settings.prefer, settings.pick)
    return make_plan(run_id, images, clusters, failures, summary, policy, pick, settings.protect)


def match(images: list[ImageRecord], vectors_by_hash: dict[str, np.ndarray], settings: ScanSettings):
    """Candidate pairs (kNN + hash buckets) -> verdicts -> clusters."""
    if len(images) < 2:
        return []
    vectors = np.stack([vectors_by_hash[im.facts.content_hash] for im in images]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    candidates = set(neighbors.knn_pairs(vectors, settings.neighbors, min_similarity=CANDIDATE_MIN_COSINE))
    candidates |= neighbors.exact_pairs([im.facts.content_hash for im in images])
    candidates |= neighbors.near_hash_pairs([int(im.facts.phash, 16) for im in images], PHASH_CANDIDATE_BITS)
    pairs = np.array(sorted(candidates), dtype=np.int64).reshape(-1, 2)
    features = PairFeatures.compute(images, vectors, pairs)
    verdicts = ThresholdVerifier().verdicts(features)
    # issue 5: bursts become similar pairs, RAW+JPEG pairs never match; then the configured keeper policies.
    verdicts = apply_captures(
        images, vectors, verdicts, burst_seconds=settings.burst_seconds, burst_similarity=settings.burst_similarity
    )
    policy, pick = keeper_policies(settings.prefer, settings.pick)
    return build_groups(
        len(images),
        verdicts,
        rank=policy.rank(images),
        content_hashes=[im.facts.content_hash for im in images],
        similar_rank=pick.rank(images),
    )
