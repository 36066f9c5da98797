"""How soon the decoding processes deliver their first results, with the fork server's preload
(`ndup.workers.PRELOAD`) and without it (each worker importing numpy, Pillow, imagehash and SciPy's FFT
itself), in fresh processes, alternating.

    python benchmarks/pool_start.py --workers 2 8 --rounds 3

Each run starts a pool of W workers (`ndup.workers.ordered_map`) in a new Python process and times the
first W files read (`ndup.decode.analyze`; camera-sized JPEGs are made in a temporary folder unless
`--library` names a folder of JPEGs). Reported: the median seconds per setting, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def first_results(library: Path, workers: int, preload: bool) -> float:
    """In this process (a fresh one): seconds from the pool's start to its first `workers` results."""
    from ndup import workers as pool
    from ndup.decode import analyze

    if not preload:
        pool.PRELOAD = ("__main__",)  # multiprocessing's own default
    paths = sorted(str(p) for p in library.iterdir())[:workers]
    start = time.perf_counter()
    list(pool.ordered_map(analyze, paths, max(2, workers)))
    return time.perf_counter() - start


def make_library(folder: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((4000, 3000), Image.BICUBIC).save(folder / f"{i:03d}.jpg", quality=90)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--library", type=Path, default=None, help="a folder of JPEGs [made in a temporary folder]")
    p.add_argument("--child", nargs=3, metavar=("LIBRARY", "WORKERS", "PRELOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        library, workers, preload = args.child
        print(first_results(Path(library), int(workers), preload == "1"))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        library = args.library or make_library(Path(tmp), max(args.workers))
        for workers in args.workers:
            seconds: dict[str, list[float]] = {"preloaded": [], "not preloaded": []}
            for _ in range(args.rounds):
                for name in seconds:
                    flag = "1" if name == "preloaded" else "0"
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", str(library), str(workers), flag],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    seconds[name].append(float(out.stdout.strip().splitlines()[-1]))
            with_it, without = (statistics.median(seconds[n]) for n in ("preloaded", "not preloaded"))
            print(
                f"{workers} workers: first {workers} files in {with_it:.3f} s preloaded, {without:.3f} s not "
                f"(medians of {args.rounds}); ratio {with_it / without:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
