"""Throughput benchmark: how close a scan comes to the decode limit, rescans, memory, the HNSW index.

    python benchmarks/throughput.py                      # everything, default sizes (about an hour on 2 cores)
    python benchmarks/throughput.py --images 200 --stat-files 20000 --vectors 100000   # a quick run
    python benchmarks/throughput.py --parts hnsw --vectors 1000000                       # one part
    python benchmarks/throughput.py ... --markdown docs/benchmarks.md                    # record the table
    python benchmarks/throughput.py --device cuda ...                                    # on a GPU

Parts (`--parts`, comma-separated; default all):

  scan     builds a library of camera-sized JPEGs (`--size`, default 4000x3000, quality 90) cut and
           scaled from the photo pool, then measures, in this order and in one run:
           - the decode-only ceiling: the same files read and draft-decoded to the network's input
             size by the same number of worker processes, nothing else (the physical limit);
           - a cold scan (`ndup scan` in a subprocess, empty cache): images/s and the ratio to the ceiling;
             peak memory of the scan and its workers together (PSS, sampled) and of the largest process;
           - a warm rescan of the same files (nothing changed: only stats).
  rescan   100,000 (`--stat-files`) small distinct image files whose facts and embeddings are already in
           the cache (written straight into it, so that preparing them takes seconds, not a cold scan):
           the full `ndup scan` of that unchanged library, end to end in a subprocess (walk, stat,
           cache lookup, matching with the persisted index, plan), and peak RSS. The embeddings are
           real descriptors of the pool's photos with noise added (so neighbours look like a photo
           library's, not like random vectors), never near enough to be duplicates. Then, on a copy
           of that cache without its index, pair verdicts or saved match, a scan that first embeds
           32 pool photos (so the network is loaded, as in a first scan) and then matches everything:
           its time and peak memory.
  hnsw     N (`--vectors`, default 1,000,000) random 256-d unit vectors: index build time, the time to
           find every vector's 10 nearest neighbours (what grouping does), and recall@10 of that search
           against exact brute force on a sample of queries, at the ef a scan uses and at higher ef;
           0.5% of the vectors replaced by noisy copies (cosine 0.9) of others, and how many of those
           the search finds. `--photo-like`: the vectors are made as the rescan part's are (mixtures of
           three real descriptors of pool photos, with noise), whose neighbours look like a photo
           library's (the network runs once, for the pool's descriptors, unless they are in --work).

Timings on a shared machine are noisy; ratios measured in the same run (scan / ceiling) are the
numbers to compare. Only the pool's descriptors (rescan, hnsw --photo-like) use the network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The commands it times import the ndup beside this script too, not an installed one: a checkout of
# older code, run with its own copy of this script, measures that code.
OWN_CODE = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}

START, END = "<!-- throughput:start -->", "<!-- throughput:end -->"
DEFAULT_POOL = ROOT.parent / "shared" / "photos"
GRAIN = 5.0  # standard deviation of the luminance noise added to the library's pictures


# ---- the synthetic library ----------------------------------------------------------------------------
def build_library(pool: Path, out: Path, n: int, size: tuple[int, int], quality: int, seed: int) -> list[Path]:
    """n camera-sized JPEGs: random crops of pool photos scaled up to `size`, each distinct."""
    from PIL import Image, ImageEnhance

    photos = sorted(p for p in pool.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    w, h = size
    for i in range(n):
        path = out / f"IMG_{i:05d}.jpg"
        files.append(path)
        if path.exists():
            continue
        with Image.open(photos[i % len(photos)]) as src:
            im = src.convert("RGB")
        # a random crop of 60-100% with the camera's aspect, turned portrait half the time for variety
        f = rng.uniform(0.6, 1.0)
        cw = min(im.width, round(im.height * w / h)) * f
        ch = min(im.height, cw * h / w)  # min: float rounding may put it a hair past the edge
        x0, y0 = max(0.0, rng.uniform(0, im.width - cw)), max(0.0, rng.uniform(0, im.height - ch))
        im = im.resize((w, h), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
        # sensor grain: an upscaled photo alone is far smoother than a camera's, and compresses (and
        # decodes) faster than real photos do; with it the files are about camera-sized in bytes too
        grain = np.random.default_rng(seed * 100_003 + i).normal(0, GRAIN, (h, w, 1)).astype(np.int16)
        im = Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + grain, 0, 255).astype(np.uint8))
        im.save(path, "JPEG", quality=quality)
    return files


# ---- measuring a subprocess ---------------------------------------------------------------------------
def _descendants(root: int) -> list[int]:
    """root and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _pss_kib(pid: int) -> int:
    """Proportional set size: the process's own pages plus its share of pages it shares (a worker
    forked from the same server shares the libraries' pages), so a sum over processes is real memory."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# Reading smaps_rollup walks the process's page tables (about 18 ms for a scan with torch loaded) and
# slows it meanwhile: read twice every 0.2 s, a 23 s scan took 26.5 s.
SAMPLE_SECONDS = 0.5


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (None: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeMemory(threading.Thread):
    """Samples the summed PSS of all the processes under `root` every SAMPLE_SECONDS (`root` itself
    too, unless it is only the reaper); `peak` in bytes (0 where /proc has no smaps_rollup: not Linux).
    `cpu`: each of those processes' CPU seconds at its last sample (a process that ends between two
    samples loses up to SAMPLE_SECONDS of it)."""

    def __init__(self, root: int, count_root: bool):
        super().__init__(daemon=True)
        self.root, self.count_root, self.peak, self.finished = root, count_root, 0, threading.Event()
        self.cpu: dict[int, float] = {}

    def run(self) -> None:
        while True:  # a sample at once: a command shorter than the interval still gets one
            pids = _descendants(self.root)[0 if self.count_root else 1 :]
            self.peak = max(self.peak, 1024 * sum(_pss_kib(p) for p in pids))
            for p in pids:
                if (seconds := _cpu_seconds(p)) is not None:
                    self.cpu[p] = seconds
            if self.finished.wait(SAMPLE_SECONDS):
                return


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, dict, str]:
    """(wall seconds, peak memory, stdout). Peak memory: `largest` the peak RSS bytes of the largest
    process of the command (the reaper waits for every descendant), `all` the peak summed over the
    command and all its processes at once (sampled; 0 where it cannot be); `cpu` the CPU seconds of
    each of those processes, largest first (sampled; empty where /proc is not)."""
    reaper = ROOT / "tests" / "reaper.py"
    with tempfile.TemporaryDirectory() as where:
        rss_file = os.path.join(where, "maxrss")
        prefix = [sys.executable, str(reaper), rss_file] if sys.platform == "linux" and reaper.exists() else []
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*prefix, *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **OWN_CODE, **(env or {})},
        )
        memory = TreeMemory(proc.pid, count_root=not prefix)
        if os.path.exists("/proc/self/smaps_rollup"):
            memory.start()
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
        memory.finished.set()
        if proc.returncode not in (0, 10):
            sys.stderr.write(stderr.decode(errors="replace"))
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
        if os.path.exists(rss_file):  # this command's own; RUSAGE_CHILDREN here would add up earlier runs'
            with open(rss_file) as f:
                largest = int(f.read())
        else:
            largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if memory.is_alive():
        memory.join()
    cpu = sorted((round(c, 1) for c in memory.cpu.values() if c >= 0.05), reverse=True)
    return wall, {"largest": largest * 1024, "all": memory.peak, "cpu": cpu}, stdout.decode()


def ndup(*args) -> list[str]:
    return [sys.executable, "-m", "ndup", *map(str, args)]


# ---- part: scan ---------------------------------------------------------------------------------------
def _draft_only(path: str) -> int:
    """What the ceiling measures per file: read it, draft-decode it to the model's size (as a scan's
    decode does), convert to RGB. No hashing, no resampling, no network."""
    from io import BytesIO

    from PIL import Image

    from ndup.decode import MODEL_SIDE

    with open(path, "rb") as f:
        data = f.read()
    im = Image.open(BytesIO(data))
    im.draft("RGB", (MODEL_SIDE, MODEL_SIDE))
    im = im.convert("RGB")
    return im.width * im.height


def decode_ceiling(files: list[Path], workers: int) -> float:
    """Images per second of draft decoding alone, with `workers` processes (the scan's own pool)."""
    from ndup.workers import ordered_map

    paths = [str(p) for p in files]
    list(ordered_map(_draft_only, paths[: 2 * workers], workers))  # start-up is not decode time
    start = time.perf_counter()
    for _ in ordered_map(_draft_only, paths, workers, in_flight=8 * workers):
        pass
    return len(paths) / (time.perf_counter() - start)


def gpu_decode_ceiling(files: list[Path], batch: int = 64) -> float:
    """Images per second of reading the files and decoding them with nvjpeg in batches (what a scan
    on a CUDA device does for JPEGs), scaled and turned upright as the scan does, nothing else."""
    import torch

    from ndup.model.gpu import decode_jpegs

    def run(paths):
        for i in range(0, len(paths), batch):
            chunk = [p.read_bytes() for p in paths[i : i + batch]]
            decode_jpegs(chunk, [1] * len(chunk), "cuda")
        torch.cuda.synchronize()

    run(files[:batch])  # warm-up: CUDA context, nvjpeg handles
    start = time.perf_counter()
    run(files)
    return len(files) / (time.perf_counter() - start)


def part_scan(args, work: Path) -> dict:
    lib = work / f"library-{args.size[0]}x{args.size[1]}-q{args.quality}-g{GRAIN:g}"
    t = time.perf_counter()
    files = build_library(args.pool, lib, args.images, tuple(args.size), args.quality, args.seed)
    files = files[: args.images]
    for p in lib.iterdir():  # a library built for a larger --images run keeps its files: scan exactly n
        if p not in set(files):
            p.unlink()
    print(f"library: {len(files)} files in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    mb = sum(p.stat().st_size for p in files) / len(files) / 2**20
    for p in files:  # into the page cache, for every measurement alike
        p.read_bytes()
    workers = args.workers
    ceiling = decode_ceiling(files, workers)
    print(f"decode ceiling: {ceiling:.1f} images/s", file=sys.stderr)
    gpu_ceiling = gpu_decode_ceiling(files) if args.device == "cuda" else None
    db = work / "scan.db"
    for f in work.glob("scan.db*"):
        f.unlink()
    common = ["--db", db, "--workers", workers, "--device", args.device, "--json", "--quiet"]
    cold, cold_memory, out = run_measured(ndup("scan", lib, *common))
    summary = json.loads(out)["summary"]
    assert summary["decoded"] == len(files), summary
    print(f"cold scan: {cold:.1f} s", file=sys.stderr)
    warm, warm_memory, out = run_measured(ndup("scan", lib, *common))
    assert json.loads(out)["summary"]["decoded"] == 0
    # the model's start-up (loading torch and the weights) is part of a cold scan; say how much
    startup = measure_startup(args.device)
    return {
        "files": len(files),
        "size": f"{args.size[0]}x{args.size[1]}",
        "mb_per_file": round(mb, 2),
        "workers": workers,
        "ceiling_ips": round(ceiling, 2),
        "cold_s": round(cold, 2),
        "cold_ips": round(len(files) / cold, 2),
        "startup_s": round(startup, 2),
        "cold_ips_steady": round(len(files) / max(cold - startup, 1e-9), 2),
        "ratio": round(len(files) / cold / ceiling, 3),
        "ratio_steady": round(len(files) / max(cold - startup, 1e-9) / ceiling, 3),
        # where the cold scan's time went: reading (decoding and the network) and matching
        "read_s": summary["stages"]["read"],
        "match_s": summary["stages"]["match"],
        "read_ratio": round(len(files) / max(summary["stages"]["read"], 1e-9) / ceiling, 3),
        "pairs_verified": summary.get("pairs", {}).get("verified"),
        "cold_memory": cold_memory,
        "warm_s": round(warm, 2),
        "warm_memory": warm_memory,
        "gpu_ceiling_ips": None if gpu_ceiling is None else round(gpu_ceiling, 2),
        "gpu_ratio": None if gpu_ceiling is None else round(len(files) / cold / gpu_ceiling, 3),
    }


def measure_startup(device: str) -> float:
    """Seconds to start ndup, import torch and load the network (a cold scan pays it once)."""
    code = (
        "import time; t=time.perf_counter(); import ndup.cli; from ndup.config import ScanSettings; "
        "from ndup.scan import load_embedder; "
        f"load_embedder(ScanSettings(roots=(), device={device!r})).loaded(); print(time.perf_counter()-t)"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, **OWN_CODE})
    return time.perf_counter() - start


# ---- part: rescan of a large unchanged library ---------------------------------------------------------
def part_rescan(args, work: Path) -> dict:
    from bench_cache import seed_cache

    lib = work / f"stat-{args.stat_files}"
    db = work / f"stat-{args.stat_files}.db"
    t = time.perf_counter()
    stats = seed_cache(lib, db, args.stat_files, args.pool, args.seed)
    print(f"stat library: {args.stat_files} files seeded in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    options = ["--workers", args.workers, "--device", "cpu", "--json", "--quiet"]
    common = ["--db", db, *options]
    # The first rescan of a seeded cache builds the persisted index (the seeding wrote none); the
    # second is the steady state a user sees every time.
    first, first_memory, out = run_measured(ndup("scan", lib, *common))
    s = json.loads(out)["summary"]
    assert s["decoded"] == 0, s
    warm, warm_memory, out = run_measured(ndup("scan", lib, *common))
    s = json.loads(out)["summary"]
    assert s["decoded"] == 0, s
    groups = len(json.loads(out)["groups"])
    # A first scan's match of a large library with the network loaded: a copy of the cache without
    # its index, pair verdicts or saved match, and NEW_PHOTOS pool photos the scan has to embed first.
    fresh = work / "match-from-scratch.db"
    for f in work.glob(fresh.name + "*"):
        f.unlink()
    shutil.copyfile(db, fresh)
    new = work / f"new-{NEW_PHOTOS}"
    new.mkdir(exist_ok=True)
    for photo in sorted(args.pool.glob("*.jpg"))[:NEW_PHOTOS]:
        shutil.copyfile(photo, new / photo.name)
    cold_match, cold_match_memory, out = run_measured(ndup("scan", lib, new, "--db", fresh, *options))
    s_cold = json.loads(out)["summary"]
    assert s_cold["embedded"] == NEW_PHOTOS, s_cold
    return {
        "stat_files": args.stat_files,
        "first_s": round(first, 2),
        "first_memory": first_memory,
        "warm_s": round(warm, 2),
        "warm_memory": warm_memory,
        "cold_match_s": round(cold_match, 2),
        "cold_match_memory": cold_match_memory,
        "stages": s.get("stages", {}),
        "groups": groups,
        "neighbours": stats,
    }


NEW_PHOTOS = 32  # photos a scan embeds before matching the whole seeded library from scratch


# ---- part: hnsw ---------------------------------------------------------------------------------------
def hnsw_vectors(n: int, photo_like: bool, pool: Path, work: Path, rng: np.random.Generator):
    """(n, d) unit vectors, random or photo-like, and the (P, 2) rows of the near-copies planted in them."""
    if photo_like:  # like the rescan part's library: mixtures of real descriptors, with noise
        from bench_cache import pool_descriptors, synthetic

        x = synthetic(pool_descriptors(pool, work / "pool-descriptors.npy"), n, rng).astype(np.float32)
    else:
        x = rng.standard_normal((n, 256), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    dim = x.shape[1]
    # Planted near-duplicates: what grouping must find. 0.5% of the vectors are replaced by noisy
    # copies (cosine about 0.9) of others; random vectors have no other neighbour above ~0.35.
    planted = min(n // 200, 5000)
    pairs = rng.choice(n, size=(planted, 2), replace=False)
    noise = rng.standard_normal((planted, dim), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = 0.9 * x[pairs[:, 0]] + np.sqrt(1 - 0.81) * noise
    x[pairs[:, 1]] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    return x, pairs


def exact_neighbours(x: np.ndarray, sample: np.ndarray, k: int) -> np.ndarray:
    """The k nearest rows of x to each sampled row (itself excluded), by brute force."""
    exact = np.empty((len(sample), k), dtype=np.int64)
    for s in range(0, len(sample), 32):
        rows = sample[s : s + 32]
        sims = x[rows] @ x.T
        sims[np.arange(len(rows)), rows] = -np.inf
        exact[s : s + len(rows)] = np.argpartition(-sims, k, axis=1)[:, :k]
    return exact


def recall_of(labels: np.ndarray, sample: np.ndarray, exact: np.ndarray) -> float:
    """recall@k of a search's `labels` for the sampled rows (k + 1 found each, themselves left out)."""
    k = exact.shape[1]
    hits = sum(len(set(lab[lab != q][:k].tolist()) & set(ex.tolist())) for lab, ex, q in zip(labels, exact, sample))
    return hits / (len(sample) * k)


def planted_found(index, x: np.ndarray, pairs: np.ndarray, k: int, threads: int) -> float:
    """Share of the planted pairs in which either one is among the other's k nearest."""
    if not len(pairs):
        return float("nan")
    a, _ = index.knn_query(x[pairs[:, 0]], k=k + 1, num_threads=threads)
    b, _ = index.knn_query(x[pairs[:, 1]], k=k + 1, num_threads=threads)
    found = sum(int(q in la or p in lb) for (p, q), la, lb in zip(pairs.tolist(), a.tolist(), b.tolist()))
    return found / len(pairs)


def part_hnsw(args, work: Path) -> dict:
    from ndup import neighbors

    n, threads = args.vectors, args.threads
    rng = np.random.default_rng(args.seed)
    x, pairs = hnsw_vectors(n, args.photo_like, args.pool, work, rng)
    t = time.perf_counter()
    index = neighbors.build_index(x, threads=threads)
    build = time.perf_counter() - t
    print(f"hnsw: built {n} in {build:.0f} s", file=sys.stderr)
    k = 10
    sample = rng.choice(n, size=min(args.queries, n), replace=False)
    t = time.perf_counter()
    exact = exact_neighbours(x, sample, k)
    brute = (time.perf_counter() - t) / len(sample) * n  # extrapolated to every vector
    out = {"vectors": n, "dim": x.shape[1], "kind": "photo-like" if args.photo_like else "random", "threads": threads,
           "build_s": round(build, 1), "brute_s_est": round(brute, 1), "queries": len(sample), "planted": len(pairs),
           "ef": {}}  # fmt: skip
    scan_ef = neighbors.query_ef(k, n)
    for ef in sorted({scan_ef, 64, 128, 256}):
        index.set_ef(ef)
        labels, _ = index.knn_query(x[sample], k=k + 1, num_threads=threads)
        recall = recall_of(labels, sample, exact)
        t = time.perf_counter()
        index.knn_query(x[: min(n, 20000)], k=k + 1, num_threads=threads)
        all_q = (time.perf_counter() - t) / min(n, 20000) * n
        dup = planted_found(index, x, pairs, k, threads)
        out["ef"][ef] = {"recall10": round(recall, 4), "query_all_s": round(all_q, 1), "scan": ef == scan_ef,
                         "planted_recall": round(dup, 4)}  # fmt: skip
        print(f"hnsw: ef {ef}: recall@10 {recall:.4f}, planted {dup:.4f}, all queries {all_q:.0f} s", file=sys.stderr)
    return out


# ---- the report ---------------------------------------------------------------------------------------
def _mib(b: int) -> str:
    return f"{b / 2**20:,.0f} MiB"


def markdown(res: dict, command: str) -> str:
    env = res["env"]
    lines = [
        f"Measured {env['date']} on {env['machine']} ({env['cpus']} CPU cores, shared with other work; "
        f"torch {env['torch']}, device `{env['device']}`), with:",
        "",
        "```sh",
        command,
        "```",
        "",
    ]
    if "scan" in res:
        s = res["scan"]
        lines += [
            f"**Scan** of {s['files']} camera-sized JPEGs ({s['size']}, quality {res['env']['quality']}, "
            f"{s['mb_per_file']} MB each, in the page cache), `--workers {s['workers']}`:",
            "",
            "| measure | value |",
            "|---|---|",
            f"| decode-only ceiling (draft decode, same workers) | {s['ceiling_ips']} images/s |",
            f"| cold scan, end to end (`ndup scan`, empty cache) | {s['cold_ips']} images/s ({s['cold_s']} s) |",
            f"| ratio cold scan / ceiling | **{s['ratio']}** |",
            f"| start-up in that (Python, torch, weights) | {s['startup_s']} s |",
            f"| cold scan without start-up / ceiling | {s['ratio_steady']} ({s['cold_ips_steady']} images/s) |",
            f"| of the cold scan: reading (decode and network) / matching ({s['pairs_verified']} pairs verified) "
            f"| {s['read_s']} s / {s['match_s']} s |",
            f"| reading alone (start-up included) / ceiling | {s['read_ratio']} |",
            f"| peak memory of the cold scan, all its processes at once (PSS) | {_mib(s['cold_memory']['all'])} |",
            f"| peak RSS of its largest process | {_mib(s['cold_memory']['largest'])} |",
            "| CPU seconds of each of its processes, largest first (the scan's, the network's and the "
            f"decoders', in some order) | {', '.join(map(str, s['cold_memory'].get('cpu', [])))} |",
            f"| warm rescan of the same {s['files']} files | {s['warm_s']} s |",
        ]
        if s.get("gpu_ceiling_ips"):
            lines += [
                f"| GPU decode ceiling (read + nvjpeg, batches of 64) | {s['gpu_ceiling_ips']} images/s |",
                f"| ratio cold scan / GPU decode ceiling | **{s['gpu_ratio']}** |",
            ]
        lines.append("")
    if "rescan" in res:
        r = res["rescan"]
        stages = ", ".join(f"{k} {v} s" for k, v in r["stages"].items())
        lines += [
            f"**Warm rescan** of an unchanged library of {r['stat_files']:,} files (all cached), end to end:",
            "",
            "| measure | value |",
            "|---|---|",
            f"| first rescan (builds the index and pair verdicts when absent) | {r['first_s']} s |",
            f"| warm rescan (index loaded) | **{r['warm_s']} s** |",
            f"| where the warm rescan's time goes | {stages} |",
            f"| peak memory, all processes at once (PSS) | {_mib(r['warm_memory']['all'])} |",
            f"| peak RSS of the largest process | {_mib(r['warm_memory']['largest'])} |",
            f"| {NEW_PHOTOS} new photos embedded, then the whole library matched from scratch (no index, "
            f"pair verdicts or saved match) | {r['cold_match_s']} s |",
            f"| its peak memory, all processes at once (PSS) / largest process | "
            f"{_mib(r['cold_match_memory']['all'])} / {_mib(r['cold_match_memory']['largest'])} |",
            "",
        ]
    if "hnsw" in res:
        h = res["hnsw"]
        lines += [
            f"**HNSW** over {h['vectors']:,} {h.get('kind', 'random')} {h['dim']}-d unit vectors, {h['threads']} threads "
            f"(recall@10 against brute force on {h['queries']:,} of them, self excluded; "
            f"{h['planted']:,} of them replaced by noisy copies of others at cosine 0.9, found by the 10-NN search "
            f"of either side or not):",
            "",
            "| ef | recall@10 | planted copies found | build | 10-NN of every vector | build + search |",
            "|---|---|---|---|---|---|",
        ]
        for ef, e in h["ef"].items():
            mark = " (what a scan uses)" if e["scan"] else ""
            total = h["build_s"] + e["query_all_s"]
            lines.append(
                f"| {ef}{mark} | {e['recall10']} | {e['planted_recall']} | {h['build_s']} s | {e['query_all_s']} s "
                f"| {total / 60:.1f} min |"
            )
        lines += ["", f"Brute force for comparison: about {h['brute_s_est'] / 60:.0f} min (extrapolated).", ""]
    return "\n".join(lines)


def write_markdown(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{table}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Throughput\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="scan,rescan,hnsw", help="comma-separated: scan, rescan, hnsw")
    p.add_argument("--pool", type=Path, default=DEFAULT_POOL, help="the photo pool")
    p.add_argument("--work", type=Path, default=None, help="work folder (kept between runs) [a temporary one]")
    p.add_argument("--images", type=int, default=1000, help="camera-sized JPEGs in the scanned library")
    p.add_argument("--size", type=int, nargs=2, default=(4000, 3000), metavar=("W", "H"))
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--stat-files", type=int, default=100_000, help="files in the unchanged library")
    p.add_argument("--vectors", type=int, default=1_000_000, help="vectors in the HNSW part")
    p.add_argument("--queries", type=int, default=1000, help="brute-force checked queries for recall")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for the HNSW part")
    p.add_argument(
        "--photo-like",
        action="store_true",
        help="HNSW part: vectors made as the rescan part's are (mixtures of real descriptors, with noise), not random",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", type=Path, default=None, help="write the table into this file, between markers")
    p.add_argument("--json", type=Path, default=None, help="write the raw results here")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    import torch

    res: dict = {
        "env": {
            "date": time.strftime("%Y-%m-%d"),
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
            "quality": args.quality,
        }
    }
    if args.device == "cuda":
        res["env"]["machine"] += f", {torch.cuda.get_device_name()}"
    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ndup-throughput-")
        work = Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        if "scan" in parts:
            res["scan"] = part_scan(args, work)
        if "rescan" in parts:
            res["rescan"] = part_rescan(args, work)
        if "hnsw" in parts:
            res["hnsw"] = part_hnsw(args, work)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp.name, ignore_errors=True)
    command = "python benchmarks/throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(res, command.strip())
    print(table)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    if args.markdown:
        write_markdown(args.markdown, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
