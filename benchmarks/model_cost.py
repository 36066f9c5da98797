"""CPU (or GPU) cost per image of the full model against the plain backbone, measured in one run.

    python benchmarks/model_cost.py [--photos ../shared/photos] [--device cpu] [--rounds 5]
    python benchmarks/model_cost.py --heap-runs 3        # the glibc heap setting (ndup.heap) on and off
    python benchmarks/model_cost.py --chunk 32           # the CPU network 32 images at a time, not 16
    NDUP_TORCH_THREADS=2 python benchmarks/model_cost.py # the CPU network on 2 threads

Both models embed the same batches of real photos (decoded as a scan decodes them), alternating
round by round so that machine noise hits both alike; the report is the ratio of the medians.
The full model's cost depends on how many images get a second orientation hypothesis, so that
share is reported too, with the page faults and system time per image of the full model.

`--heap-runs N` measures instead what `ndup.heap.keep_freed_memory` saves: the full model in N
subprocesses with it and N without (`--plain-heap`), alternating, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ndup.decode import analyze
from ndup.model.embed import Embedder
from ndup.records import Decoded


def load_batch(photos: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    decoded = []
    for path in sorted(photos.glob("*.jpg")):
        out = analyze(str(path))
        if isinstance(out, Decoded) and out.pixels.std() > 4:
            decoded.append(out)
        if len(decoded) == n:
            break
    pixels = np.stack([d.pixels for d in decoded])
    aspects = np.array([d.facts.width / d.facts.height for d in decoded], dtype=np.float32)
    return pixels, aspects


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--plain-heap", action="store_true", help="leave glibc's malloc as it is (ndup.heap)")
    p.add_argument("--chunk", type=int, default=None, help="images the CPU network takes at once [CPU_CHUNK]")
    p.add_argument("--heap-runs", type=int, default=0, help="compare the heap setting on and off, N runs each")
    args = p.parse_args(argv)
    if args.heap_runs:
        return compare_heap(args)
    import ndup.model.embed

    if args.plain_heap:
        ndup.model.embed.keep_freed_memory = lambda: False
    if args.chunk:
        ndup.model.embed.CPU_CHUNK = args.chunk
    pixels, aspects = load_batch(args.photos, args.batch)
    models = {"backbone": Embedder(args.device, None, "backbone"), "full": Embedder(args.device, args.weights, "full")}
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():  # warm-up
        m.embed(pixels[:4], aspects[:4])
    second, faults, system, cpu = 0, 0, 0.0, 0.0
    for _ in range(args.rounds):
        for name, m in models.items():
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            out = m.embed(pixels, aspects)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / len(pixels))
            if name == "full":
                after = resource.getrusage(resource.RUSAGE_SELF)
                second = int((~np.isnan(out["alt_vector"][:, 0])).sum())
                faults += after.ru_minflt - before.ru_minflt
                system += after.ru_stime - before.ru_stime
                cpu += after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    base, full = statistics.median(times["backbone"]), statistics.median(times["full"])
    n = args.rounds * len(pixels)
    heap = "plain" if args.plain_heap else "kept"
    chunk = ndup.model.embed.CPU_CHUNK
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, batch {len(pixels)} (CPU chunks of {chunk}), "
        f"{args.rounds} rounds, heap {heap}"
    )
    print(f"plain backbone: {base * 1000:.1f} ms/image")
    print(f"full model:     {full * 1000:.1f} ms/image ({second}/{len(pixels)} images with a second orientation)")
    print(f"full model:     {faults / n:.0f} page faults and {system / n * 1000:.1f} ms of system time per image")
    print(f"full model:     {cpu / n * 1000:.1f} ms of CPU (all threads) per image")
    print(f"ratio full/backbone: {full / base:.2f}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    return 0


def compare_heap(args) -> int:
    """The full model's ms/image with ndup.heap's setting and without, in alternating subprocesses."""
    ms: dict[str, list[float]] = {"kept": [], "plain": []}
    common = [sys.executable, __file__, "--photos", str(args.photos), "--device", args.device]
    common += ["--batch", str(args.batch), "--rounds", str(args.rounds)]
    common += ["--chunk", str(args.chunk)] if args.chunk else []
    common += ["--weights", str(args.weights)] if args.weights else []
    for _ in range(args.heap_runs):
        for heap in ms:
            out = subprocess.run(
                [*common, *(["--plain-heap"] if heap == "plain" else [])], capture_output=True, text=True
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            print(out.stdout, end="")
            ms[heap].append(float(re.search(r"full model: +([0-9.]+) ms/image", out.stdout).group(1)))
    kept, plain = statistics.median(ms["kept"]), statistics.median(ms["plain"])
    print(
        f"full model, median of {args.heap_runs} runs: heap kept {kept:.1f} ms/image, plain {plain:.1f}; ratio {kept / plain:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
