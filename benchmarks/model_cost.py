"""CPU (or GPU) cost per image of the full model against the plain backbone, measured in one run.

    python benchmarks/model_cost.py [--photos ../shared/photos] [--device cpu] [--rounds 5]

Both models embed the same batches of real photos (decoded as a scan decodes them), alternating
round by round so that machine noise hits both alike; the report is the ratio of the medians.
The full model's cost depends on how many images get a second orientation hypothesis, so that
share is reported too.
"""

from __future__ import annotations

import argparse
import statistics
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
    args = p.parse_args(argv)
    pixels, aspects = load_batch(args.photos, args.batch)
    models = {"backbone": Embedder(args.device, None, "backbone"), "full": Embedder(args.device, args.weights, "full")}
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():  # warm-up
        m.embed(pixels[:4], aspects[:4])
    second = 0
    for _ in range(args.rounds):
        for name, m in models.items():
            start = time.perf_counter()
            out = m.embed(pixels, aspects)
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / len(pixels))
            if name == "full":
                second = int((~np.isnan(out["alt_vector"][:, 0])).sum())
    base, full = statistics.median(times["backbone"]), statistics.median(times["full"])
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {len(pixels)}, {args.rounds} rounds")
    print(f"plain backbone: {base * 1000:.1f} ms/image")
    print(f"full model:     {full * 1000:.1f} ms/image ({second}/{len(pixels)} images with a second orientation)")
    print(f"ratio full/backbone: {full / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
