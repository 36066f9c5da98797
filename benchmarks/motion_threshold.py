"""How registration's motion threshold (ndup.registration.MAX_MOTION) was chosen: the motion it measures
on copy pairs and on copy/second-capture pairs of the *training* photos' accuracy benchmark.

    python benchmarks/accuracy.py --variants full          # builds /tmp/ndup-accuracy/{train,test}
    python benchmarks/motion_threshold.py                   # the training photos (default)
    python benchmarks/motion_threshold.py --split test      # the held-out ones, to check, not to choose

Pairs: every copy against its original, plus up to six pairs of two edited copies per photo (copies:
never another frame), and up to 60 pairs across each labelled second capture's scene and its copies
(never the same picture). Each is registered (`ndup.registration.register`); among the pairs that are
aligned and whose blocks mostly match (where the motion decides), the script prints the percentiles
of the measured motion and how many pairs of each kind lie above a few thresholds.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from ndup import registration
from ndup.scan import registration_view


def labelled_pairs(bench: dict, seed: int = 0) -> tuple[list, list]:
    """(copy pairs, second-capture pairs) of file names."""
    rng = random.Random(seed)
    truth, kinds = bench["truth"], bench["kinds"]
    groups = defaultdict(list)
    for name, group in truth.items():
        groups[group].append(name)
    apart = []
    for a, b in bench["similar"]:
        cross = [(p, q) for p in groups[truth[a]] for q in groups[truth[b]]]
        apart += rng.sample(cross, min(len(cross), 60))
    copies = []
    for names in groups.values():
        original = [n for n in names if kinds.get(n) == "original"]
        if not original:
            continue
        edited = [n for n in names if kinds.get(n) != "original"]
        copies += [(original[0], n) for n in edited]
        rng.shuffle(edited)
        copies += list(zip(edited[::2], edited[1::2]))[:6]
    return copies, apart


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/ndup-accuracy"), help="accuracy.py's work folder")
    p.add_argument("--split", choices=("train", "test"), default="train")
    args = p.parse_args(argv)
    folder = args.work / args.split
    bench = json.loads((folder / "benchmark.json").read_text())["bench"]
    views: dict[str, registration.View | None] = {}

    def view(name: str):
        if name not in views:
            views[name] = registration_view(str(folder / name))
        return views[name]

    copies, apart = labelled_pairs(bench)
    for label, pairs in (("copies", copies), ("second captures", apart)):
        motions = []
        for a, b in pairs:
            va, vb = view(a), view(b)
            found = None if va is None or vb is None else registration.register(va, vb)
            if found is None or not found.aligned or found.motion is None:
                continue
            if found.typical_block >= registration.MIN_WORST_BLOCK:
                motions.append(found.motion)
        m = np.array(motions)
        pct = np.percentile(m, [0, 1, 50, 90, 99, 99.5, 100]) if len(m) else []
        print(f"{label}: {len(pairs)} pairs, {len(m)} aligned with most blocks matching")
        print("  motion (px) at percentiles 0/1/50/90/99/99.5/100:", " ".join(f"{v:.3f}" for v in pct))
        for threshold in (0.15, 0.2, 0.25, 0.3):
            print(f"  above {threshold:.2f} px: {int((m > threshold).sum())}")
    print(f"MAX_MOTION = {registration.MAX_MOTION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
