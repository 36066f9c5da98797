"""What the GPU path costs the scan's own process per image, with the GPU taken out: a cap on its
throughput that no GPU can lift, measurable on any machine.

    python benchmarks/gpu_path_cost.py --library /tmp/tp/library-4000x3000-q90-g5 [--workers 2] [--rounds 3]
    py-spy record --gil -r 200 --format raw -o gil.txt -- \
        python benchmarks/gpu_path_cost.py --library ... --rounds 2 --paths gpu
    python benchmarks/gpu_path_cost.py --gil-profile gil.txt --rate 200 --images 400

On a CUDA machine a scan's worker processes read and hash the JPEGs and send them whole to the scan's
process, which decodes them in batches on the GPU (ndup.model.gpu), works out their facts and embeds
them; what that one process does in Python for each image is serial under its GIL, whatever the GPU.
Here the GPU decoder is replaced by a stub that returns each file's picture at once (decoded
beforehand, not timed) and no network runs (the `phash` variant), so what is left is the scan's own
work: receiving the workers' results, handing bytes to the decoder, working out the pictures' facts,
writing the cache. The report is that process's CPU time per image in the read stage (all its threads:
an upper bound on its serial part, since threads that release the GIL run in parallel), and the
images per second that this would cap a GPU scan at, next to the same scan on the CPU path (the
workers decode) for comparison, alternating round by round.

The serial part itself, the time some thread of that process holds the GIL, is measured from outside
with py-spy (`--gil` keeps only samples of the thread holding it): `--gil-profile` sums the samples of
the read stage's threads (the scan's main thread in `_read`, the process pools' result and task
threads, the thread pool that works out facts) per image. The images are those the profiled run read
in its GPU rounds (200 files, 2 rounds: 400); start-up and the stub's own preparation are left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the ndup beside this script, not an installed one

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from ndup import scan as scan_module  # noqa: E402
from ndup.config import ScanSettings  # noqa: E402
from ndup.decode import MODEL_SIDE  # noqa: E402
from ndup.model import gpu  # noqa: E402


def _key(data: bytes) -> tuple[int, bytes]:
    return len(data), bytes(data[-64:])  # cheap: the stub's own cost must not count


def small_pictures(files: list[Path]) -> dict:
    """Each file's upright picture with its short side MODEL_SIDE, as the GPU decoder returns it."""
    out = {}
    for path in files:
        data = path.read_bytes()
        with Image.open(path) as im:
            im.draft("RGB", (MODEL_SIDE, MODEL_SIDE))
            im = ImageOps.exif_transpose(im.convert("RGB"))
            scale = MODEL_SIDE / min(im.size)
            im = im.resize((max(MODEL_SIDE, round(im.width * scale)), max(MODEL_SIDE, round(im.height * scale))))
            out[_key(data)] = np.asarray(im)
    return out


def scan_cost(library: Path, workers: int, gpu_path: bool, pictures: dict) -> tuple[float, float, int]:
    """(CPU seconds of this process in the read stage, its wall seconds, images) for one cold scan."""
    stub = lambda datas, orientations, device: [pictures.get(_key(d)) for d in datas]  # noqa: E731
    saved = scan_module._gpu_decoder, gpu.decode_jpegs
    scan_module._gpu_decoder = (lambda settings: "cpu") if gpu_path else (lambda settings: None)
    gpu.decode_jpegs = stub
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = ScanSettings(roots=(library,), db_path=Path(tmp) / "cache.db", workers=workers, variant="phash")
            clock: dict[str, tuple[float, float]] = {}

            class Clock(scan_module.Progress):
                def stage(self, name, total=None):
                    now = (time.process_time(), time.perf_counter())
                    if name == "Reading images":
                        clock["start"] = now
                    elif "start" in clock and "read" not in clock:
                        clock["read"] = (now[0] - clock["start"][0], now[1] - clock["start"][1])

            plan = scan_module.run_scan(settings, progress=Clock(), embedder_factory=None)
            return (*clock["read"], plan.summary["images"])
    finally:
        scan_module._gpu_decoder, gpu.decode_jpegs = saved


def gil_per_image(raw: Path, rate: float, images: int) -> dict[str, float]:
    """ms per image that each kind of thread of the scan's process held the GIL, from a py-spy raw
    profile (one line per stack: frames separated by ';', then a sample count)."""
    kinds = {"result thread (process pools)": "_ExecutorManagerThread", "task thread (process pools)": "Queue._feed",
             "thread pool (facts)": "_WorkItem.run", "main thread, reading": "_read ("}  # fmt: skip
    held = dict.fromkeys(kinds, 0)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if (len(frames) > 1 and "forkserver" in frames[1]) or "small_pictures" in stack:
            continue  # a worker process, or the stub's preparation
        for kind, marker in kinds.items():
            if marker in stack:
                held[kind] += int(count)
                break
    out = {kind: n / rate / images * 1000 for kind, n in held.items()}
    out["all of them"] = sum(out.values())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--library", type=Path, help="a folder of JPEGs (benchmarks/throughput.py makes one)")
    p.add_argument("--gil-profile", type=Path, help="summarise this py-spy --gil raw profile instead")
    p.add_argument("--rate", type=float, default=200, help="its sampling rate (py-spy -r)")
    p.add_argument("--images", type=int, default=400, help="images its run read in the profiled rounds")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--paths", default="gpu,cpu", help="which of the two paths to run: gpu, cpu or both")
    args = p.parse_args(argv)
    if args.gil_profile:
        print(f"GIL held per image, {args.gil_profile} ({args.images} images, {args.rate:g} samples/s):")
        for kind, ms in gil_per_image(args.gil_profile, args.rate, args.images).items():
            print(f"  {kind}: {ms:.2f} ms")
        return 0
    if args.library is None:
        p.error("--library is needed (or --gil-profile)")
    files = sorted(f for f in args.library.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg"))
    pictures = small_pictures(files)
    names = {"gpu": "GPU path (decoder stubbed)", "cpu": "CPU path"}
    per_image: dict[str, list[float]] = {names[k]: [] for k in args.paths.split(",")}
    walls: dict[str, list[float]] = {name: [] for name in per_image}
    for _ in range(args.rounds):
        for name in per_image:
            cpu, wall, images = scan_cost(args.library, args.workers, name.startswith("GPU"), pictures)
            per_image[name].append(cpu / images * 1000)
            walls[name].append(images / wall)
    print(f"{len(files)} JPEGs in {args.library}, --workers {args.workers}, {args.rounds} rounds (medians)")
    print(
        "| path | the scan process's CPU per image (read stage) | images/s that allows, were it all serial | images/s here |"
    )
    print("|---|---|---|---|")
    for name, ms in per_image.items():
        mid = statistics.median(ms)
        print(
            f"| {name} | {mid:.2f} ms ({min(ms):.2f}-{max(ms):.2f}) | {1000 / mid:,.0f} | {statistics.median(walls[name]):.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
