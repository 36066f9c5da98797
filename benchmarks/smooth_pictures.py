"""What the intensity path of registration adds on pictures with too few corners for keypoints: how
many copy pairs it shows to be the same picture, and how many second-capture pairs it wrongly does.

    python benchmarks/accuracy.py --variants full          # builds /tmp/ndup-accuracy/{train,test}
    python benchmarks/smooth_pictures.py                    # the training photos (default)
    python benchmarks/smooth_pictures.py --split test       # the held-out ones, to check, not to choose

Pairs, among the files with fewer than `ndup.registration.FEW_KEYPOINTS` keypoints: each such original
against every copy of it, and every file of a scene against each of the scene's second captures when
either is keypoint-poor. Each pair is registered twice, with the intensity path off and on
(`ndup.registration.register`), and the script prints how many are called the same picture, and the
time each way; then, for the pairs placed by intensity whose verdict the perspective decides (ECC
correlation at least `MIN_ECC` and every other check passed: only those are measured), how far a
perspective fit moves the corners. `MAX_PERSPECTIVE` was chosen from this script's output when it
still measured every intensity fit (up to commit ff3f746).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ndup import registration
from ndup.scan import registration_view


def pairs(bench: dict, poor: set[str]) -> tuple[list, list]:
    """(copy pairs, second-capture pairs) of file names that involve a keypoint-poor file."""
    scenes: dict[str, list[str]] = {}
    for name, group in bench["truth"].items():
        scenes.setdefault(group.split("__shot")[0], []).append(name)
    copies, apart = [], []
    for stem, files in scenes.items():
        shots = [f for f in files if "__shot" in f]
        kept = [f for f in files if "__shot" not in f]
        apart += [(f, s) for s in shots for f in kept if f in poor or s in poor]
        original = f"{stem}.jpg"
        if original in poor:
            copies += [(original, f) for f in kept if f != original]
    return copies, apart


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/ndup-accuracy"))
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    folder = args.work / args.split
    bench = json.loads((folder / "benchmark.json").read_text())["bench"]
    names = sorted(bench["truth"])
    with ThreadPoolExecutor(args.threads) as pool:
        views = dict(zip(names, pool.map(lambda n: registration_view(str(folder / n)), names)))
    poor = {n for n, v in views.items() if v is not None and len(v.points) < registration.FEW_KEYPOINTS}
    copies, apart = pairs(bench, poor)
    print(
        f"{args.split}: {len(poor)} of {len(names)} files keypoint-poor; {len(copies)} copy pairs, "
        f"{len(apart)} second-capture pairs"
    )

    shifts: dict[str, list[float]] = {"copies": [], "second captures": []}

    def same(pair, kind: str = "") -> bool:
        a, b = views[pair[0]], views[pair[1]]
        found = None if a is None or b is None else registration.register(a, b)
        if kind and found is not None and found.perspective is not None:
            shifts[kind].append(found.perspective)
        return found is not None and found.same_picture

    few = registration.FEW_KEYPOINTS
    print("| intensity path | copies shown the same picture | second captures called the same picture | seconds |")
    print("|---|---|---|---|")
    for label, threshold in (("off", 0), ("on", few)):
        registration.FEW_KEYPOINTS = threshold
        started = time.monotonic()
        with ThreadPoolExecutor(args.threads) as pool:
            hits = sum(pool.map(same, copies, ["copies" if threshold else ""] * len(copies)))
            wrong = sum(pool.map(same, apart, ["second captures" if threshold else ""] * len(apart)))
        print(f"| {label} | {hits}/{len(copies)} | {wrong}/{len(apart)} | {time.monotonic() - started:.0f} |")
    registration.FEW_KEYPOINTS = few
    limit = registration.MAX_PERSPECTIVE
    for kind, values in shifts.items():
        v = np.array(values)
        pct = " ".join(f"{x:.1f}" for x in np.percentile(v, [0, 10, 50, 90, 100])) if len(v) else "-"
        print(
            f"{kind} placed by intensity: {len(v)}; perspective corner shift (px) at percentiles "
            f"0/10/50/90/100: {pct}; at most {limit} px: {int((v <= limit).sum())}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
