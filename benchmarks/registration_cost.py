"""What registration costs a scan: the match stage with and without it, on the same cache.

    python benchmarks/registration_cost.py --images 300
    python benchmarks/registration_cost.py --library /tmp/ndup-accuracy/test   # any folder

Builds (or reuses) a library of camera-sized JPEGs the way benchmarks/throughput.py does: random
crops of pool photos, so nearly every image has second captures of its scene, which registration
must tell from crops. `--library` times a folder of your choice instead: the accuracy benchmark's
(many copies of each photo, every pair of which registration checks for moved parts) is the other
extreme. The files are read once; then the match runs again and again, alternating the
decision unit alone (`unit`) and the unit plus registration (`full`), with the cached matches and pair
verdicts removed before each run so that every pair is verified anew. Reported: the match seconds of
each and their ratio, against the seconds it took to read the files (this machine, this run), and how
many times a full match read a file again for registration (and how many distinct files). These matches
run on a filled cache, as a rescan's would, so every picture registration needs is read from its file;
a cold scan keeps most of them from its own decode (`scan.KEPT_VIEWS_BYTES`; benchmarks/throughput.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import DEFAULT_POOL, build_library

import ndup.scan
from ndup.config import ScanSettings
from ndup.match_cache import match_path
from ndup.scan import pairs_path, run_scan

READ_AGAIN: Counter = Counter()  # path -> times a match read it again for registration
_registration_view = ndup.scan.registration_view


def _counted_registration_view(path: str):
    READ_AGAIN[path] += 1
    return _registration_view(path)


ndup.scan.registration_view = _counted_registration_view


def scan(library: Path, db: Path, variant: str) -> dict:
    match_path(db).unlink(missing_ok=True)
    pairs_path(db).unlink(missing_ok=True)
    return run_scan(ScanSettings(roots=(library,), db_path=db, variant=variant)).summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    p.add_argument("--work", type=Path, default=None, help="work folder (kept between runs) [a temporary one]")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, nargs=2, default=(4000, 3000), metavar=("W", "H"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--library", type=Path, default=None, help="time this folder instead of building one")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ndup-registration-"))
    library = args.library or work / f"library-{args.images}-{args.size[0]}x{args.size[1]}"
    if args.library is None and (not library.is_dir() or len(list(library.iterdir())) != args.images):
        build_library(args.pool, library, args.images, tuple(args.size), 90, 0)
    db = work / "cache.db"
    for old in work.glob("cache.db*"):  # a fresh cache: the files are read once, and timed
        old.unlink()
    read = scan(library, db, "unit")["stages"]["read"]
    seconds: dict[str, list[float]] = {"unit": [], "full": []}
    copies = {}
    for _ in range(args.rounds):
        for variant in seconds:
            READ_AGAIN.clear()
            summary = scan(library, db, variant)
            seconds[variant].append(summary["stages"]["match"])
            copies[variant] = summary["groups"]
    unit, full = (statistics.median(seconds[v]) for v in ("unit", "full"))
    images = summary.get("images", args.images)
    what = str(library) if args.library else f"{args.size[0]}x{args.size[1]}"
    print(f"{images} images ({what}): reading them took {read:.1f} s")
    print(f"match without registration (unit): {unit:.2f} s (median of {args.rounds}), {copies['unit']} groups")
    print(f"match with registration (full):     {full:.2f} s, {copies['full']} groups")
    print(f"ratio full/unit {full / unit:.2f}; registration adds {(full - unit) / images * 1000:.0f} ms an image")
    print(f"a full match read {sum(READ_AGAIN.values())} files again for registration ({len(READ_AGAIN)} distinct)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
