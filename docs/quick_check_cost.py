"""What checking the cache costs: scan, apply and undo run SQLite's quick_check before writing.

    python docs/quick_check_cost.py [PHOTOS]

Fills a cache in a temporary folder with PHOTOS made-up photos (default 100,000): each one's file
facts and a 1280-float vector, written the way a scan writes them (Store.write_batch, batches of
1,000), then times opening it with and without the check, three times each, the file in the page
cache: the fastest, as wall and CPU time (docs/reliability.md quotes the numbers).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ndup.records import Decoded, FileEntry, ImageFacts
from ndup.store import Store


def fill(db: Path, photos: int, batch: int = 1000) -> None:
    rng = np.random.default_rng(0)
    with Store.open(db) as store:
        for start in range(0, photos, batch):
            results, vectors = [], {}
            for i in range(start, min(start + batch, photos)):
                path, digest = f"/home/me/Photos/{i // 500:04d}/IMG_{i:06d}.jpg", rng.bytes(32).hex()
                facts = ImageFacts(digest, "JPEG", 4032, 3024, rng.bytes(8).hex(), rng.bytes(8).hex(), quality=92,
                                   exif_tags=40, capture_time="2023-07-14T10:22:05", camera_make="Camera",
                                   camera_model="Model", sharpness=120.5, clipped=0.01)  # fmt: skip
                results.append((FileEntry(path, 3_500_000, i, 1, i), Decoded(path, 3_500_000, i, facts, None)))
                vectors[digest] = rng.standard_normal(1280).astype(np.float32)
            store.write_batch(results, vectors, "model", 1)


def best_of_three(db: Path, check: bool) -> tuple[float, float]:
    """The fastest of three openings: (wall, CPU) seconds; on a busy machine CPU time is the steadier."""
    times = []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        with Store.open(db, check=check):
            pass
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def main() -> None:
    photos = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as where:
        db = Path(where) / "ndup.db"
        t = time.perf_counter()
        fill(db, photos)
        filled = time.perf_counter() - t
        size = db.stat().st_size
        plain, checked = best_of_three(db, False), best_of_three(db, True)
    print(f"{photos:,} photos, cache {size / 1e6:.0f} MB (written in {filled:.0f} s): open {plain[0] * 1000:.0f} "
          f"ms, open with quick_check {checked[0] * 1000:.0f} ms ({checked[1] * 1000:.0f} ms of CPU)")  # fmt: skip


if __name__ == "__main__":
    main()
