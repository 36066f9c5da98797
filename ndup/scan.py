"""The scan pipeline: walk -> read what changed -> embed -> match -> group -> plan, all cached."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ndup import neighbors, structure
from ndup.captures import apply_captures
from ndup.config import ScanSettings
from ndup.decisions import IgnoreIndex
from ndup.decode import DECODE_VERSION, analyze
from ndup.errors import NdupError
from ndup.group import build_groups
from ndup.plan import make_plan
from ndup.policy import keeper_policies
from ndup.records import Decoded, Failure, FileEntry, ImageRecord, Outcome, PairVerdict, Plan
from ndup.store import Store
from ndup.verify import DecisionUnit, PairInputs, ThresholdVerifier
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


@functools.lru_cache(maxsize=4)
def _cached_embedder(device: str, weights: Path | None, variant: str):
    from ndup.model.embed import Embedder

    return Embedder(device, weights, variant)


def load_embedder(settings: ScanSettings):
    """The network, loaded once per process and only when some file needs embedding."""
    return _cached_embedder(settings.device, settings.weights, settings.variant)


def embedder_model_id(settings: ScanSettings) -> str:
    from ndup.model.spec import model_id

    return model_id(settings.weights, settings.variant)


def cache_entry(out: dict, i: int) -> tuple[np.ndarray, dict, bytes]:
    """One image's model output as the cache keeps it: the descriptor (followed by the second
    orientation hypothesis's, when there is one), the facts about the alignment (JSON-ready) and the
    aligned thumbnail(s) for the pixel-level check."""
    aux = {"phash": format(int(out["phash"][i]), "016x")}
    if "orientation" in out:
        aux["orientation"] = int(out["orientation"][i])
    if "affine" in out:
        aux["affine"] = [round(float(v), 5) for v in out["affine"][i]]
    vector = out["vector"][i]
    thumb = structure.encode(out["thumb"][i])
    if "alt_vector" in out and not np.isnan(out["alt_vector"][i]).any():
        aux["alt_phash"] = format(int(out["alt_phash"][i]), "016x")
        aux["alt_orientation"] = int(out["alt_orientation"][i])
        vector = np.concatenate([vector, out["alt_vector"][i]])
        thumb += structure.encode(out["alt_thumb"][i])
    return vector, aux, thumb


def _split_cached(vector: np.ndarray, aux: dict) -> tuple[np.ndarray, np.ndarray | None]:
    if "alt_phash" in aux:
        half = len(vector) // 2
        return vector[:half], vector[half:]
    return vector, None


def run_scan(
    settings: ScanSettings,
    progress: Progress | None = None,
    embedder_factory: Callable[[ScanSettings], object] = load_embedder,
    on_matched: Callable[[list[ImageRecord], list[PairVerdict]], None] | None = None,
) -> Plan:
    """Scan `settings.roots`, update the cache, and return (and store) a new plan.

    `on_matched` (for `ndup eval`) receives the images and every verified candidate pair.
    """
    progress = progress or Progress()
    started = time.monotonic()
    roots = _check_roots(settings.roots)
    with Store.open(settings.db_path, check=True) as store:
        run_id = store.begin_run([str(r) for r in roots], _settings_record(settings))
        try:
            plan = _scan(store, run_id, roots, settings, progress, embedder_factory, started, on_matched)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a full disk must not hide what stopped the scan
                store.finish_run(run_id, "interrupted")
            raise
        store.save_plan(plan)
        return plan


def _settings_record(settings: ScanSettings) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items() if k != "roots"}


def _scan(store, run_id, roots, settings, progress, embedder_factory, started, on_matched) -> Plan:
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
    needs_embedding = settings.variant != "phash"
    cached = store.cached_stats()
    embedded = store.embedded_hashes(model_id) if needs_embedding else _AllHashes()
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
            new: dict[str, Decoded] = {}
            for _, o in batch:
                if isinstance(o, Decoded) and o.facts.content_hash not in embedded:
                    new.setdefault(o.facts.content_hash, o)
            vectors: dict[str, tuple[np.ndarray, dict]] = {}
            if new:
                embedder = embedder or embedder_factory(settings)
                decoded = list(new.values())
                out = embedder.embed(
                    np.stack([d.pixels for d in decoded]),
                    np.array([d.facts.width / d.facts.height for d in decoded], dtype=np.float32),
                )
                vectors = {h: cache_entry(out, i) for i, h in enumerate(new)}
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
    embeddings = store.embeddings((im.facts.content_hash for im in images), model_id) if needs_embedding else {}
    clusters, verdicts = match(
        images, embeddings, settings, IgnoreIndex(store.ignored_hash_sets()), lambda h: store.thumbnail(h, model_id)
    )
    if on_matched is not None:
        on_matched(images, verdicts)
    counts.elapsed_s = round(time.monotonic() - started, 3)
    summary = {k: v for k, v in asdict(counts).items() if k != "extra"}
    summary["model"] = model_id
    progress.done()
    policy, pick = keeper_policies(settings.prefer, settings.pick)
    return make_plan(run_id, images, clusters, failures, summary, policy, pick, settings.protect)


def _thumb_lookup(hashes: list[str], fetch: Callable[[str], bytes | None]):
    """(image, second hypothesis?) -> prepared thumbnail, fetched from the cache on first use."""
    cache: dict[str, tuple[np.ndarray, np.ndarray | None] | None] = {}

    def lookup(i: int, alt: bool) -> np.ndarray | None:
        h = hashes[i]
        if h not in cache:
            blob = fetch(h)
            if not blob:
                cache[h] = None
            else:
                first, rest = structure.decode(blob)
                second = structure.decode(rest)[0] if rest else None
                cache[h] = (structure.prepare(first), None if second is None else structure.prepare(second))
        pair = cache[h]
        return None if pair is None else pair[1 if alt and pair[1] is not None else 0]

    return lookup


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32)
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)


class _AllHashes(set):
    """Stands in for 'every file is embedded' when the variant needs no embeddings."""

    def __contains__(self, item) -> bool:
        return True


def pair_inputs(
    images: list[ImageRecord],
    embeddings: dict[str, tuple[np.ndarray, dict]],
    thumbnail: Callable[[str], bytes | None] | None = None,
) -> PairInputs:
    """What the verifier weighs, for every image, from the cache entries (`cache_entry`) of its content."""
    hashes = [im.facts.content_hash for im in images]
    alt_vectors = alt_phash = None
    if embeddings:
        split = [_split_cached(*embeddings[h]) for h in hashes]
        vectors = _unit(np.stack([v for v, _ in split]))
        aligned = [embeddings[h][1].get("phash", "0") for h in hashes]
        if any(alt is not None for _, alt in split):
            alt_vectors = np.full_like(vectors, np.nan)
            for i, (_, alt) in enumerate(split):
                if alt is not None:
                    alt_vectors[i] = _unit(alt[None])[0]
            alt_phash = [embeddings[h][1].get("alt_phash", "0") for h in hashes]
    else:
        vectors = np.zeros((len(images), 1), dtype=np.float32)
        aligned = ["0"] * len(images)
    thumbs = _thumb_lookup(hashes, thumbnail) if thumbnail else None
    return PairInputs.from_records(images, vectors, aligned, alt_vectors, alt_phash, thumbs)


def match(
    images: list[ImageRecord],
    embeddings: dict[str, tuple[np.ndarray, dict]],
    settings: ScanSettings,
    ignore: IgnoreIndex | None = None,
    thumbnail: Callable[[str], bytes | None] | None = None,
) -> tuple[list, list[PairVerdict]]:
    """Candidate pairs (kNN + hash buckets) -> verdicts -> clusters.

    `ignore` holds what a person marked "not duplicates" in review: those pairs never match again."""
    if len(images) < 2:
        return [], []
    hashes = [im.facts.content_hash for im in images]
    inputs = pair_inputs(images, embeddings, thumbnail)
    vectors, alt_vectors = inputs.vectors, inputs.alt_vectors
    candidates = neighbors.exact_pairs(hashes)
    hash_bits = PHASH_CANDIDATE_BITS
    if settings.variant == "phash":  # the hash is the only signal: look as far as any useful threshold
        hash_bits = 16
    candidates |= neighbors.near_hash_pairs([int(im.facts.phash, 16) for im in images], hash_bits)
    if embeddings:
        rows, owners = vectors, np.arange(len(images))
        if alt_vectors is not None:  # every hypothesis is searched; hits count for the image that owns it
            has_alt = ~np.isnan(alt_vectors[:, 0])
            rows = np.concatenate([vectors, alt_vectors[has_alt]])
            owners = np.concatenate([owners, np.flatnonzero(has_alt)])
        found = neighbors.knn_pairs(rows, settings.neighbors, min_similarity=CANDIDATE_MIN_COSINE, owners=owners)
        candidates |= set(found)
    pairs = np.array(sorted(candidates), dtype=np.int64).reshape(-1, 2)
    verdicts = verifier_for(settings).verdicts(inputs, pairs)
    # bursts (same camera, seconds apart) become similar pairs; RAW+JPEG pairs of one capture never match
    verdicts = apply_captures(
        images, vectors, verdicts, burst_seconds=settings.burst_seconds, burst_similarity=settings.burst_similarity
    )
    if ignore is not None and ignore.sets:
        verdicts = [
            replace(v, tier=None) if v.tier and ignore.together(hashes[v.a], hashes[v.b]) else v for v in verdicts
        ]
    policy, pick = keeper_policies(settings.prefer, settings.pick)
    clusters = build_groups(
        len(images),
        [v for v in verdicts if v.tier],
        rank=policy.rank(images),
        content_hashes=hashes,
        similar_rank=pick.rank(images),
    )
    return clusters, verdicts


def verifier_for(settings: ScanSettings):
    if settings.variant == "full":
        from ndup.model.spec import SHIPPED_WEIGHTS

        return _decision_unit(settings.weights or SHIPPED_WEIGHTS)
    if settings.variant == "phash":
        return ThresholdVerifier("phash", settings.threshold if settings.threshold is not None else 10 / 64)
    return ThresholdVerifier("cosine", settings.threshold if settings.threshold is not None else 0.9)


@functools.lru_cache(maxsize=4)
def _decision_unit(weights: Path) -> DecisionUnit:
    try:
        return DecisionUnit.load(weights)
    except (OSError, KeyError, ValueError) as e:
        raise NdupError(f"cannot read the decision unit from {weights}: {e}", hint="check --weights") from None
