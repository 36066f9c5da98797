"""The scan pipeline: walk -> read what changed -> embed -> match -> group -> plan, all cached."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ndup import match_cache, neighbors, structure
from ndup.captures import apply_captures
from ndup.config import ScanSettings
from ndup.decisions import IgnoreIndex
from ndup.decode import DECODE_VERSION, REGISTRATION_SIDE, Deferred, analyze, load_oriented, registration_grey
from ndup.errors import NdupError
from ndup.group import build_groups, unverified_scene_pairs
from ndup.heap import release_freed_memory
from ndup.pair_cache import PairCache
from ndup.plan import make_plan
from ndup.policy import keeper_policies
from ndup.records import Decoded, Failure, FileEntry, ImageRecord, Outcome, PairVerdict, Plan
from ndup.store import Store
from ndup.verify import REGISTRATION, DecisionUnit, PairInputs, SparseRows, ThresholdVerifier
from ndup.walk import walk
from ndup.workers import default_workers, ordered_map

# The loosest cosine that can still be a similar shot: looser neighbours are not even looked at.
CANDIDATE_MIN_COSINE = 0.5
# Two images whose perceptual hashes differ by at most this many bits are candidates regardless.
PHASH_CANDIDATE_BITS = 6
# Registration pictures (480x360 greyscale for a 4:3 photo) kept from the scan's own decode for the
# match, so that the files they show need not be decoded again (about 30 ms for a camera JPEG): for
# the first files read, up to this many bytes, held until the match ends.
KEPT_VIEWS_BYTES = 128 << 20


class Progress:
    """What the pipeline tells whoever watches it; the CLI renders it with Rich, tests ignore it."""

    def stage(self, name: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def note(self, text: str) -> None: ...

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
        images += isinstance(item[1], (Decoded, Deferred))
        # Count only images towards the batch, so batches fill the model; cap the rest for latency.
        if images >= size or len(batch) >= 8 * size:
            yield batch
            batch, images = [], 0
    if batch:
        yield batch


def _decoder_crashed(path: str) -> Failure:
    return Failure(path, "the decoder crashed on this file (its worker process died); it is skipped until it changes")


def read_ahead(workers: int, batch_size: int) -> int:
    """Files handed to the decoding processes ahead of the one the scan waits for: two batches and
    then some, so that they decode the next batch while the network embeds this one (on a CPU the
    network is the slower part; on a GPU the decoders must never wait for it)."""
    return max(8 * max(workers, 1), 2 * batch_size + 4 * max(workers, 1))


def _read_changed(
    entries: list[FileEntry], workers: int, batch_size: int, read: Callable = analyze, keep_views: int = 0
) -> Iterator[tuple[FileEntry, Outcome]]:
    paths = (e.path for e in entries)
    yield from zip(entries, _in_workers(read, paths, workers, read_ahead(workers, batch_size), keep_views))


def _in_workers(
    read: Callable, paths: Iterable[str], workers: int, in_flight: int = 64, keep_views: int = 0
) -> Iterator[Outcome]:
    """`read` over the files in worker processes, in order; a file whose decoder crashes is a Failure.
    The first `keep_views` files are read with `keep_view` (their registration pictures come too)."""
    keeping = functools.partial(read, keep_view=True)
    tasks = ((keeping if i < keep_views else read, path) for i, path in enumerate(paths))
    try:
        yield from ordered_map(_run, tasks, workers, in_flight=in_flight, crashed=lambda t: _decoder_crashed(t[1]))
    except BrokenProcessPool as e:  # not one file's doing: new worker processes die at once
        raise NdupError(
            f"the worker processes that read files cannot run ({e})", hint="try --workers 1, and check free memory"
        ) from None


def _registers(settings: ScanSettings) -> bool:
    """Whether the match registers pairs (ndup.registration): the full variant does."""
    return settings.variant == "full"


def _run(task: tuple[Callable, str]) -> Outcome:
    read, path = task
    return read(path)


def _gpu_decoder(settings: ScanSettings) -> str | None:
    """The device JPEGs are decoded on when the network runs on a CUDA GPU (there the CPU's decoders
    would be the bottleneck); None: in the worker processes, as everywhere else. NDUP_GPU_DECODE=0
    turns it off."""
    if settings.variant == "phash" or settings.device not in ("auto", "cuda"):
        return None
    if os.environ.get("NDUP_GPU_DECODE") == "0":
        return None
    from ndup.model.device import cpu_for_certain

    if cpu_for_certain(settings.device):  # no GPU: no need to import torch to ask
        return None
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _decode_deferred(batch: list[tuple[FileEntry, Outcome]], device: str, workers: int) -> list:
    """Decode a batch's deferred JPEGs together on `device`; files it cannot decode go to the CPU
    decoder, in worker processes."""
    from concurrent.futures import ThreadPoolExecutor

    from ndup.model.gpu import decode_jpegs

    slots = [i for i, (_, o) in enumerate(batch) if isinstance(o, Deferred)]
    if not slots:
        return batch
    deferred: list[Deferred] = [batch[i][1] for i in slots]  # type: ignore[misc]
    rgbs = decode_jpegs([d.data for d in deferred], [d.orientation for d in deferred], device)
    # What nvjpeg rejects is likely damaged: the CPU decoder takes it in worker processes, as any
    # other file, so that a decoder crashing on it costs a worker, not the scan.
    rejected = [d.path for d, rgb in zip(deferred, rgbs) if rgb is None]
    on_cpu = dict(zip(rejected, _in_workers(analyze, rejected, workers))) if rejected else {}

    def finish(pair: tuple[Deferred, np.ndarray | None]) -> Outcome:
        d, rgb = pair
        return d.finish(rgb) if rgb is not None else on_cpu[d.path]

    out = list(batch)
    # hashes and measures of the small pictures: Pillow and numpy release the GIL for most of it
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, outcome in zip(slots, pool.map(finish, zip(deferred, rgbs))):
            out[i] = (batch[i][0], outcome)
    return out


@functools.lru_cache(maxsize=4)
def _cached_embedder(device: str, weights: Path | None, variant: str):
    from ndup.model.embed import Embedder

    return Embedder(device, weights, variant)


class _NetworkHere:
    """The network in this process, loaded (once per process) when the first image needs it."""

    def __init__(self, settings: ScanSettings):
        self._key = (settings.device, settings.weights, settings.variant)

    def loaded(self) -> str:
        return _cached_embedder(*self._key).model_id

    def embed(self, pixels: np.ndarray, aspects: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return _cached_embedder(*self._key).embed(pixels, aspects)


def load_embedder(settings: ScanSettings):
    """The network, for the images no network output is cached for. On the CPU it runs in a process
    of its own, which starts loading at once and ends before matching (ndup.model.embed_process),
    unless this process holds torch already (a GPU scan's decoder, a caller that trains or tests the
    model): then here, loaded once per process, when the first image needs it."""
    from ndup.model.device import cpu_for_certain

    if "torch" not in sys.modules and cpu_for_certain(settings.device):
        from ndup.model.embed_process import EmbedderProcess

        return EmbedderProcess(settings.device, settings.weights, settings.variant)
    return _NetworkHere(settings)


def _close_embedder(embedder, kill: bool = False) -> None:
    """End a network process (one in this process is kept for the next scan)."""
    close = getattr(embedder, "close", None)
    if close is not None:
        close(kill=kill)


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


def _match_settings(settings: ScanSettings) -> dict:
    """The settings a match depends on (the verifier's own are in `verifier_id`)."""
    keys = ("neighbors", "prefer", "pick", "burst_seconds", "burst_similarity", "variant", "threshold")
    return {k: getattr(settings, k) for k in keys}


def _settings_record(settings: ScanSettings) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items() if k != "roots"}


def _read(
    todo: list[FileEntry], embedded, store, model_id, settings, embedder_factory, counts, progress
) -> dict[str, np.ndarray]:
    """Read the files that changed, embed the images whose content no network output is cached for
    (`embedded`: content hashes, updated here; `embedder_factory` None: the variant needs no
    network), and write each batch to the cache as it goes. Returns the registration pictures kept
    for the match (KEPT_VIEWS_BYTES), by content hash."""
    workers = settings.workers or default_workers()
    embedder = None
    progress.stage("Reading images", total=len(todo))
    gpu = _gpu_decoder(settings)
    read = functools.partial(analyze, defer_jpeg=True) if gpu else analyze
    # as many 4:3 pictures as KEPT_VIEWS_BYTES holds, when the match will register pairs
    keep_views = KEPT_VIEWS_BYTES // (REGISTRATION_SIDE * REGISTRATION_SIDE * 3 // 4) if _registers(settings) else 0
    kept: dict[str, np.ndarray] = {}
    kept_bytes = 0
    try:
        # With more than a batch to read, the network starts at once: its process loads (seconds)
        # while the first files decode. A smaller read first sees whether any content is new.
        if embedder_factory is not None and len(todo) > settings.batch_size:
            embedder = embedder_factory(settings)
        reading = _read_changed(todo, workers, settings.batch_size, read, keep_views)
        for batch in _batches(reading, settings.batch_size):
            if gpu:
                batch = _decode_deferred(batch, gpu, workers)
            new: dict[str, Decoded] = {}
            for _, o in batch:
                if not isinstance(o, Decoded):
                    continue
                if o.facts.content_hash not in embedded:
                    new.setdefault(o.facts.content_hash, o)
                fits = o.grey is not None and kept_bytes + o.grey.nbytes <= KEPT_VIEWS_BYTES
                if fits and o.facts.content_hash not in kept:
                    kept[o.facts.content_hash] = o.grey
                    kept_bytes += o.grey.nbytes
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
    except BaseException:
        _close_embedder(embedder, kill=True)
        raise
    # before matching, which needs the memory; one started early and never needed may still be loading
    _close_embedder(embedder, kill=counts.embedded == 0)
    return kept


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
    stages = counts.extra.setdefault("stages", {})
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        stages[name] = round(now - clock, 3)
        clock = now

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
    lap("walk")

    kept_views: dict[str, np.ndarray] = {}
    if todo:
        network = embedder_factory if needs_embedding else None
        kept_views = _read(todo, embedded, store, model_id, settings, network, counts, progress)
        release_freed_memory()  # what a network in this process kept for its next batch (ndup.heap)

    lap("read")
    progress.stage("Matching")
    paths = [e.path for e in entries]
    images = store.image_records(paths)
    failures = walk_failures + store.failures(paths)
    counts.images = len(images)
    counts.failures = len(failures)
    counts.not_images = counts.files_seen - counts.images - (len(failures) - len(walk_failures))
    ignored = store.ignored_hash_sets()
    verifier = verifier_id(settings, model_id)
    last_match = match_cache.match_path(settings.db_path)
    key = match_cache.fingerprint(images, _match_settings(settings), verifier, ignored)
    # nothing a match depends on changed: its groups are reused (unless a caller wants the verdicts)
    clusters = None if on_matched is not None else match_cache.load(last_match, key)
    counts.extra["match_reused"] = clusters is not None
    lap("load")
    if clusters is None:
        embeddings = store.embeddings((im.facts.content_hash for im in images), model_id) if needs_embedding else {}
        index = neighbors.IndexFile(index_path(settings.db_path), model_id) if needs_embedding else None
        pairs = PairCache(pairs_path(settings.db_path), verifier)
        clusters, verdicts = match(
            images,
            embeddings,
            settings,
            IgnoreIndex(ignored),
            lambda h: store.thumbnail(h, model_id),
            index=index,
            pair_cache=pairs,
            progress=progress,
            kept_views=kept_views,
        )
        kept_views.clear()
        match_cache.save(last_match, key, clusters)
        counts.extra["pairs"] = {"reused": pairs.reused, "verified": pairs.verified}
        if index is not None:
            r = index.report
            counts.extra["index"] = {"rows": r.rows, "added": r.added, "removed": r.removed,
                                     "searched": r.queried, "rebuilt": r.rebuilt}  # fmt: skip
            if r.note:
                progress.note(r.note)
        if on_matched is not None:
            on_matched(images, verdicts)
    lap("match")
    summary = {k: v for k, v in asdict(counts).items() if k != "extra"}
    summary["model"] = model_id
    progress.done()
    policy, pick = keeper_policies(settings.prefer, settings.pick)
    plan = make_plan(run_id, images, clusters, failures, summary, policy, pick, settings.protect)
    lap("plan")
    # seconds per stage (walk: finding and statting files; read: decoding and embedding what changed;
    # load: cached facts and embeddings; match: index, verification, groups) and what the index did
    plan.summary.update(counts.extra, elapsed_s=round(time.monotonic() - started, 3))
    return plan


def _thumb_lookup(hashes: list[str], fetch: Callable[[str], bytes | None]):
    """(image, second hypothesis?) -> prepared thumbnail, fetched from the cache on first use. Kept
    as stored (at most 4 KB) and prepared at each use (0.2 ms, against 20 ms for the pixel check that
    uses it): prepared they are 32 KB each, kept for every image a pixel check touched in the match."""
    cache: dict[str, tuple[np.ndarray, np.ndarray | None] | None] = {}

    def lookup(i: int, alt: bool) -> np.ndarray | None:
        h = hashes[i]
        if h not in cache:
            blob = fetch(h)
            if not blob:
                cache[h] = None
            else:
                first, rest = structure.decode(blob)
                cache[h] = (first, structure.decode(rest)[0] if rest else None)
        pair = cache[h]
        return None if pair is None else structure.prepare(pair[1 if alt and pair[1] is not None else 0])

    return lookup


def registration_view(path: str):
    """A file read again and prepared for registration (ndup.registration); None when it cannot be read
    now (moved, changed or damaged since it was scanned): it then only loses the check."""
    from ndup.registration import prepare

    try:
        return prepare(registration_grey(load_oriented(path, REGISTRATION_SIDE)))
    except Exception:  # a file that fails now only loses the check, never the scan
        return None


def _registration(paths: list[str], threads: int, kept: Callable[[int], np.ndarray | None] | None = None):
    """(P, 2) pairs of image indices -> what registration (ndup.registration) shows of each pair (+1 one
    picture, edited; -1 another frame of one scene; 0 neither), from the pictures the scan kept
    (`kept(i)`: image i's registration picture, or None) or else the files read again."""

    def view_of(i: int):
        from ndup.registration import prepare

        grey = kept(i) if kept else None
        return registration_view(paths[i]) if grey is None else prepare(grey)

    recent = None  # the views used last, kept from one call to the next (the match verifies in chunks)

    def registered(pairs: np.ndarray) -> list[int]:
        nonlocal recent
        try:  # OpenCV: loaded only when a pair needs it
            from ndup.registration import RecentViews, judge
        except ImportError as e:
            raise NdupError(
                f"cannot register pairs of pictures: OpenCV is missing ({e})",
                hint="pip install opencv-python-headless (ndup's own dependency), then scan again",
            ) from None

        if recent is None:
            recent = RecentViews()
        return judge(pairs, view_of, threads, recent)

    return registered


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
    register: bool = False,
    threads: int = 1,
    kept_views: dict[str, np.ndarray] | None = None,
) -> PairInputs:
    """What the verifier weighs, for every image, from the cache entries (`cache_entry`) of its content;
    with `register`, pairs can also be registered (on `threads` threads, from the pictures a scan kept
    by content hash, `kept_views`, or else the files read again)."""
    hashes = [im.facts.content_hash for im in images]
    alt_vectors = alt_phash = None
    if embeddings:
        split = [_split_cached(*embeddings[h]) for h in hashes]
        vectors = _unit(np.stack([v for v, _ in split]))
        aligned = [embeddings[h][1].get("phash", "0") for h in hashes]
        owners = [i for i, (_, alt) in enumerate(split) if alt is not None]
        if owners:
            alt_vectors = SparseRows(len(hashes), np.array(owners), _unit(np.stack([split[i][1] for i in owners])))
            alt_phash = [embeddings[h][1].get("alt_phash", "0") for h in hashes]
    else:
        vectors = np.zeros((len(images), 1), dtype=np.float32)
        aligned = ["0"] * len(images)
    thumbs = _thumb_lookup(hashes, thumbnail) if thumbnail else None
    kept = (lambda i: kept_views.get(hashes[i])) if kept_views else None
    registered = _registration([im.path for im in images], threads, kept) if register else None
    return PairInputs.from_records(images, vectors, aligned, alt_vectors, alt_phash, thumbs, registered)


def match(
    images: list[ImageRecord],
    embeddings: dict[str, tuple[np.ndarray, dict]],
    settings: ScanSettings,
    ignore: IgnoreIndex | None = None,
    thumbnail: Callable[[str], bytes | None] | None = None,
    index: neighbors.IndexFile | None = None,
    pair_cache: PairCache | None = None,
    progress: Progress | None = None,
    kept_views: dict[str, np.ndarray] | None = None,
) -> tuple[list, list[PairVerdict]]:
    """Candidate pairs (kNN + hash buckets) -> verdicts -> clusters.

    `ignore` holds what a person marked "not duplicates" in review: those pairs never match again.
    `kept_views`: registration pictures kept from the scan's reading, by content hash."""
    if len(images) < 2:
        return [], []
    hashes = [im.facts.content_hash for im in images]
    # the pair inputs (thumbnails, registration views) are let go when verification returns
    vectors, verdicts = _verified_candidates(
        images, hashes, embeddings, settings, thumbnail, index, pair_cache, progress, kept_views
    )
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


def _verified_candidates(
    images: list[ImageRecord],
    hashes: list[str],
    embeddings: dict[str, tuple[np.ndarray, dict]],
    settings: ScanSettings,
    thumbnail: Callable[[str], bytes | None] | None,
    index: neighbors.IndexFile | None,
    pair_cache: PairCache | None,
    progress: Progress | None,
    kept_views: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[PairVerdict]]:
    """The images' unit descriptors, and the verdicts of their candidate pairs and of every pair
    within the scenes those show."""
    threads = settings.workers or default_workers()
    register = _registers(settings)
    inputs = pair_inputs(images, embeddings, thumbnail, register=register, threads=threads, kept_views=kept_views)
    vectors, alt_vectors = inputs.vectors, inputs.alt_vectors
    candidates = neighbors.exact_pairs(hashes)
    hash_bits = PHASH_CANDIDATE_BITS
    if settings.variant == "phash":  # the hash is the only signal: look as far as any useful threshold
        hash_bits = 16
    candidates |= neighbors.near_hash_pairs([int(im.facts.phash, 16) for im in images], hash_bits)
    if embeddings:
        rows, owners = vectors, np.arange(len(images))
        if alt_vectors is not None:  # every hypothesis is searched; hits count for the image that owns it
            rows = np.concatenate([vectors, alt_vectors.rows])
            owners = np.concatenate([owners, alt_vectors.owners])
        if index is None:
            found = neighbors.knn_pairs(rows, settings.neighbors, min_similarity=CANDIDATE_MIN_COSINE, owners=owners)
        else:
            found = _indexed_pairs(index, hashes, rows, owners, len(images), settings.neighbors)
        candidates |= set(found)
    pairs = np.array(sorted(candidates), dtype=np.int64).reshape(-1, 2)
    verifier = verifier_for(settings)

    def verify(sub: np.ndarray) -> list[PairVerdict]:
        return verifier.verdicts(inputs, sub)

    progress = progress or Progress()
    pair_cache = pair_cache or PairCache(None, "")

    def verdicts_of(pairs: np.ndarray, stage: str, save: bool) -> list[PairVerdict]:
        return pair_cache.verdicts(
            hashes, pairs, verify, save=save, on_start=lambda n: progress.stage(stage, total=n),
            on_verified=progress.advance,
        )  # fmt: skip

    # pairs verified by an earlier scan keep their verdicts (pair_cache); only new pairs are verified
    found = verdicts_of(pairs, "Verifying pairs", save=False)
    # then every pair inside each scene the candidates found, so that groups rest on verified links
    extra = np.array(unverified_scene_pairs(found, SCENE_PAIRS_MAX_IMAGES), dtype=np.int64).reshape(-1, 2)
    del found  # the next call returns these verdicts again: not to hold two lists of every pair at once
    return vectors, verdicts_of(np.concatenate([pairs, extra]), "Verifying pairs within groups", save=True)


# Scenes (images linked by copy or similar verdicts) up to this size get all their pairs verified:
# at most 2,016 pairs each; a larger one is a chain of look-alikes more than a scene.
SCENE_PAIRS_MAX_IMAGES = 64


def pairs_path(db_path: Path) -> Path:
    """Verdicts of the last scan's candidate pairs, beside the cache (`ndup.db` -> `ndup.db.pairs`)."""
    return Path(f"{Path(db_path).expanduser()}.pairs")


def index_path(db_path: Path) -> Path:
    """The persisted search index beside the cache (`ndup.db` -> `ndup.db.hnsw`, and `.hnsw.meta`)."""
    return Path(f"{Path(db_path).expanduser()}.hnsw")


# Above this many rows the index is built and searched with every core (the graph then depends on
# thread timing; small libraries, and tests, stay deterministic on one thread).
THREADED_INDEX_ROWS = 20_000


def _indexed_pairs(index, hashes: list[str], rows: np.ndarray, owners: np.ndarray, n_images: int, k: int) -> dict:
    """knn_pairs through the persisted index: one row per distinct content (and hypothesis), keyed by
    content hash, so rows stay valid across scans; pairs found between two contents hold for every
    file with those contents (exact copies are paired by their hash anyway)."""
    first: dict[str, int] = {}
    files_of: dict[int, list[int]] = {}
    for i, h in enumerate(hashes):
        j = first.setdefault(h, i)
        files_of.setdefault(j, []).append(i)
    seen: dict[str, int] = {}
    keep, keys = [], []
    primary = np.arange(len(rows)) < n_images
    for r, (owner, is_primary) in enumerate(zip(owners.tolist(), primary.tolist())):
        if first[hashes[owner]] != owner:
            continue  # an exact copy's rows are its first file's
        key = hashes[owner] if is_primary else f"{hashes[owner]}/2"
        if key not in seen:
            seen[key] = r
            keep.append(r)
            keys.append(key)
    keep_rows = np.asarray(keep, dtype=np.int64)
    threads = default_workers() if len(keep_rows) >= THREADED_INDEX_ROWS else 1
    found = neighbors.knn_pairs(rows[keep_rows], k, min_similarity=CANDIDATE_MIN_COSINE,
                                owners=owners[keep_rows], index=index, keys=keys, threads=threads)  # fmt: skip
    pairs: dict[tuple[int, int], float] = {}
    for (a, b), sim in found.items():
        for i in files_of[a]:
            for j in files_of[b]:
                if i != j:
                    pairs[(i, j) if i < j else (j, i)] = sim
    return pairs


def verifier_id(settings: ScanSettings, model_id: str | None = None) -> str:
    """What the verdict of a pair of cached contents depends on, besides the two contents: the
    embeddings (`model_id`), the variant, the verifier itself and the decoder's facts. The decision
    unit can be recalibrated without changing the model id (which hashes only the embedding part of
    the weights), so the full variant names the digest of the whole weights file: new decision-unit
    weights never reuse an old verdict."""
    from ndup.model.spec import SHIPPED_WEIGHTS, weights_file_digest

    model_id = model_id or embedder_model_id(settings)
    if settings.variant in ("full", "unit"):
        judge = f"du-{weights_file_digest(settings.weights or SHIPPED_WEIGHTS)}"
        if _registers(settings):
            judge += f"|{REGISTRATION}"
    else:
        v = verifier_for(settings)
        judge = f"{v.feature}@{v.threshold!r}"
    return f"{model_id}|{settings.variant}|{judge}|decode-{DECODE_VERSION}"


def verifier_for(settings: ScanSettings):
    if settings.variant in ("full", "unit"):
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
