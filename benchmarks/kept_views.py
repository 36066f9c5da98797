"""Whether the registration pictures a scan keeps from its own decode are the very pixels reading the
files again gives, file by file.

    python benchmarks/kept_views.py /tmp/ndup-accuracy/train /tmp/ndup-accuracy/test

For every file under the folders: `ndup.decode.analyze(path, keep_view=True)`, as a scan's decoding
process reads it, against `ndup.scan.registration_view(path)`, as a match reads it again. Reported: how
many pictures were kept and equal, how many were not kept (RAW, a JPEG whose two draft scales differ, not
an image), and the paths of any that differ (there should be none: registration's verdicts rest on it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compared(path: str) -> str:
    from ndup.decode import analyze
    from ndup.records import Decoded
    from ndup.scan import registration_view

    out = analyze(path, keep_view=True)
    if not isinstance(out, Decoded) or out.grey is None:
        return "not kept"
    again = registration_view(path)
    if again is not None and out.grey.shape == again.grey.shape and np.array_equal(out.grey, again.grey):
        return "kept, equal"
    return "different"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    paths = sorted(str(Path(root) / f) for d in args.folders for root, _, files in os.walk(d) for f in files)
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        found = list(pool.map(compared, paths, chunksize=8))
    counts = Counter(found)
    print(f"{len(paths)} files: " + ", ".join(f"{n} {what}" for what, n in counts.most_common()))
    for path, what in zip(paths, found):
        if what == "different":
            print(f"different: {path}")
    return 1 if counts["different"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
