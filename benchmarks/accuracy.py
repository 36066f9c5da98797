"""Accuracy benchmark and ablation table, on copies of photos the shipped model never trained on.

    python benchmarks/accuracy.py                       # builds the benchmark, prints the table
    python benchmarks/accuracy.py --markdown docs/benchmarks.md   # and records it there

For each photo the weights file lists as held out (`held_out` in its metadata), the script writes the
original and one copy per edit kind (benchmarks/edits.py, done with Pillow, independently of the
training augmentations, and including kinds training never sees), plus synthetic second captures of
some photos (similar shots, which must never be called copies). The pool's own labelled similar-shot
pairs that fall in the held-out half are included as they are. Then every variant scans the folder
through the real pipeline (`ndup.scan.run_scan`) and is scored with `ndup.evaluate`:

  phash       perceptual hash distance only (threshold)
  backbone    EfficientNet-Lite0, last layer average-pooled (cosine threshold)
  multilayer  several stages pooled and projected, no alignment (cosine threshold)
  aligned     + the alignment stage (cosine threshold)
  unit        + the decision unit (its own calibrated probability; nothing tuned on this benchmark)
  full        + registration of the pairs the unit calls the same scene (ndup.registration; the
              default, and its thresholds were chosen on the training photos' benchmark)

Each threshold variant gets the threshold that maximises F1 on the same benchmark built from the
*training* photos, so no variant is tuned on the photos it is scored on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from edits import EDITS, EDITS_VERSION, save_edit, similar_shot

from ndup.config import ScanSettings
from ndup.evaluate import Metrics, evaluate, predicted_pairs
from ndup.model.spec import SHIPPED_WEIGHTS
from ndup.pair_cache import file_verifier, stored_verifier
from ndup.scan import pairs_path, run_scan, verifier_id

VARIANTS = ("phash", "backbone", "multilayer", "aligned", "unit", "full")
GEOMETRIC = ("crop75", "crop50", "rot90", "rot180", "rot270", "mirror", "mirror_rot90", "rot_small", "exif_rotated")


def read_meta(weights: Path) -> dict:
    with np.load(weights) as z:
        return json.loads(str(z["meta"]))


def flat(im: Image.Image) -> bool:
    return float(np.asarray(im.convert("L"), dtype=np.float32).std()) < 4.0


def build(photos: Path, names: list[str], out: Path, seed: int, similar_every: int = 3) -> dict:
    """Write the benchmark folder; return its truth, kinds, similar pairs and ignored pairs.

    A folder already built from the same photos, seed and edits is reused as it is, so the scans' caches
    stay valid and a second run (another variant, new decision-unit weights) only re-matches."""
    key = {"names": sorted(names), "seed": seed, "similar_every": similar_every, "edits": EDITS_VERSION}
    manifest = out / "benchmark.json"
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == key:
            return saved["bench"]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    labels = {e["file"]: e for e in json.loads((photos / "SOURCES.json").read_text())}
    truth, kinds, similar, ignore = {}, {}, [], []
    kept = []
    for i, name in enumerate(sorted(names)):
        im = Image.open(photos / name).convert("RGB")
        if flat(im):
            continue  # a blank wallpaper: every blank image is a copy of every other
        kept.append(name)
        stem = Path(name).stem
        rng = np.random.default_rng([seed, i])
        orig = out / f"{stem}.jpg"
        shutil.copy(photos / name, orig)
        truth[orig.name], kinds[orig.name] = stem, "original"
        for kind, (edit, fmt) in EDITS.items():
            written = save_edit(edit(im, rng), fmt, str(out / f"{stem}__{kind}"))
            truth[Path(written).name], kinds[Path(written).name] = stem, kind
        if i % similar_every == 0:  # two more captures of the scene: similar to it, copies of nothing
            frames = []
            for k in range(2):
                frame = out / f"{stem}__shot{k}.jpg"
                similar_shot(im, rng).save(frame, quality=90)
                truth[frame.name], kinds[frame.name] = f"{stem}__shot{k}", "similar_shot"
                frames.append(frame.name)
            similar += [(orig.name, frames[0]), (orig.name, frames[1]), (frames[0], frames[1])]
    # the pool's labelled relations among the photos used
    groups = defaultdict(list)
    for name in kept:
        if "group" in labels.get(name, {}):
            groups[labels[name]["group"]].append(name)
    for members in groups.values():
        relation = labels[members[0]].get("relation", "")
        files = [f"{Path(m).stem}.jpg" for m in members]
        for a, b in combinations(files, 2):
            if relation.startswith("similar-shot"):
                similar.append((a, b))
            elif relation.startswith("copy"):
                ignore.append((a, b))  # a labelled copy across two originals: scored by neither side
    bench = {"truth": truth, "kinds": kinds, "similar": similar, "ignore": ignore, "photos": kept}
    manifest.write_text(json.dumps({"key": key, "bench": bench}))
    return bench


def ambiguous_pairs(bench: dict, out: Path) -> list[tuple[str, str]]:
    """Pairs of different source photos that are variants of one design (the pool has a few recolours).

    Found on the unlabelled originals, by the plain backbone (cosine >= 0.9) or by their grey levels
    (correlation of 64 px greyscale thumbnails >= 0.95: the same design in other colours): every copy
    of one side with every copy of the other is then neither a hit nor a false match.
    """
    plan_images: dict = {}
    run_scan(
        ScanSettings(
            roots=(out,), db_path=cache_db(out.parent, out.name, "backbone"), variant="backbone", threshold=0.9
        ),
        on_matched=lambda images, verdicts: plan_images.update(images=images, verdicts=verdicts),
    )
    images = plan_images["images"]
    by_photo = defaultdict(list)
    for f, gid in bench["truth"].items():
        by_photo[gid].append(f)
    labelled = {tuple(sorted(p)) for p in bench["similar"] + bench["ignore"]}
    pairs, same_design = [], set()
    for v in plan_images["verdicts"]:
        a, b = os.path.basename(images[v.a].path), os.path.basename(images[v.b].path)
        originals = bench["kinds"].get(a) == "original" and bench["kinds"].get(b) == "original"
        if originals and v.similarity >= 0.9:
            same_design.add(tuple(sorted((a, b))))
    originals = sorted(f for f, kind in bench["kinds"].items() if kind == "original")
    grey = {f: _grey_thumbnail(out / f) for f in originals}
    for a, b in combinations(originals, 2):
        if float(grey[a] @ grey[b]) >= 0.95:
            same_design.add((a, b))
    for a, b in sorted(same_design - labelled):
        ga, gb = bench["truth"][a], bench["truth"][b]
        pairs += [(x, y) for x in by_photo[ga] for y in by_photo[gb]]
    return pairs


def _grey_thumbnail(path: Path) -> np.ndarray:
    """Zero-mean, unit-norm 64x48 greyscale thumbnail: dot products are correlations."""
    with Image.open(path) as im:
        g = np.asarray(ImageOps.exif_transpose(im).convert("L").resize((64, 48), Image.BILINEAR), np.float64)
    g = g - g.mean()
    return (g / (np.linalg.norm(g) + 1e-9)).ravel()


def cache_db(work: Path, split: str, variant: str) -> Path:
    """The scan cache of one split for one variant. "aligned", "unit" and "full" run the same network,
    so they share one; a cache is kept between runs (new decision-unit weights only re-match: the embeddings are
    keyed by the weights that shape them)."""
    return work / f"{split}-{'full' if variant in ('aligned', 'unit') else variant}.db"


def _verifier_pairs(db: Path, verifier: str) -> Path:
    """Where one verifier's remembered pair verdicts wait while other variants use the shared cache."""
    return Path(f"{pairs_path(db)}.{hashlib.sha256(verifier.encode()).hexdigest()[:12]}")


def _set_aside(db: Path) -> None:
    """Move the cache's pair verdicts to their verifier's own file (they hold one verifier's at a time)."""
    shared = pairs_path(db)
    verifier = file_verifier(shared)
    if verifier is not None:  # none, or damaged: nothing worth keeping
        os.replace(shared, _verifier_pairs(db, verifier))


def run_variant(folder: Path, db: Path, variant: str, threshold: float | None, weights: Path | None):
    """One scan of `folder` at these settings. Variants that share a cache (and the thresholds tried)
    each keep their own pair verdicts, so running the whole table again re-verifies nothing."""
    captured: dict = {}
    started = time.monotonic()
    settings = ScanSettings(roots=(folder,), db_path=db, variant=variant, threshold=threshold, weights=weights)
    _set_aside(db)
    own = _verifier_pairs(db, stored_verifier(verifier_id(settings)))
    if own.exists():
        os.replace(own, pairs_path(db))
    plan = run_scan(settings, on_matched=lambda images, verdicts: captured.update(images=images, verdicts=verdicts))
    images = captured.get("images", [])
    scores = {}
    for v in captured.get("verdicts", []):
        a, b = os.path.basename(images[v.a].path), os.path.basename(images[v.b].path)
        scores[(a, b) if a < b else (b, a)] = v.score
    return relabel(plan), scores, time.monotonic() - started


def relabel(plan):
    """Plan paths -> file names, as the truth uses."""
    from dataclasses import replace

    groups = tuple(
        replace(
            g,
            keep=os.path.basename(g.keep),
            members=tuple(replace(m, path=os.path.basename(m.path)) for m in g.members),
        )
        for g in plan.groups
    )
    return replace(plan, groups=groups)


def similar_called_copy(plan, similar: list[tuple[str, str]]) -> tuple[int, int]:
    predicted = predicted_pairs(plan)
    hits = sum(1 for a, b in similar if ((a, b) if a < b else (b, a)) in predicted)
    return hits, len(similar)


def false_matches_by_photo(plan, bench: dict) -> list[tuple[tuple[str, str], int]]:
    """Wrongly predicted pairs, counted by the two source pictures (truth groups) they join."""
    from ndup.evaluate import predicted_pairs, true_pairs

    truth = bench["truth"]
    right = true_pairs(truth) | {tuple(sorted(p)) for p in bench["ignore"]}
    counts: Counter = Counter()
    for a, b in predicted_pairs(plan):
        if a in truth and b in truth and (a, b) not in right:
            counts[tuple(sorted((truth[a], truth[b])))] += 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # ties by name: the same text every run


def best_threshold(scores: dict, bench: dict, variant: str) -> float:
    """The threshold maximising pairwise F1 on a benchmark (used on the training photos' one)."""
    from ndup.evaluate import true_pairs

    truth_pairs = true_pairs(bench["truth"]) - {tuple(sorted(p)) for p in bench["ignore"]}
    items = sorted(scores.items(), key=lambda kv: -kv[1])
    best, best_t, hits = -1.0, 1.0, 0
    for i, (pair, s) in enumerate(items, start=1):
        hits += pair in truth_pairs
        f1 = 2 * hits / (i + len(truth_pairs))
        if f1 > best:
            best, best_t = f1, s
    # scores are cosine (higher = copy) or 1 - pHash distance
    return best_t if variant != "phash" else 1.0 - best_t


def fmt_row(name: str, m: Metrics, sim: tuple[int, int], train_f1: float) -> str:
    geo = [m.recall_by_kind.get(k, (float("nan"), 0))[0] for k in GEOMETRIC]
    geo_mean = float(np.nanmean(geo)) if geo else float("nan")
    return (
        f"| {name} | {m.precision:.4f} | {m.recall:.4f} | {m.f1:.4f} | "
        f"{(m.average_precision or 0):.4f} | {geo_mean:.3f} | {sim[0]}/{sim[1]} | {train_f1:.4f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "photos")
    p.add_argument("--work", type=Path, default=Path("/tmp/ndup-accuracy"))
    p.add_argument("--weights", type=Path, default=None, help="weights file [default: the shipped one]")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--limit", type=int, default=0, help="use only the first N photos of each split (a quick look)")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables into this file (between markers)")
    args = p.parse_args(argv)
    weights = args.weights or SHIPPED_WEIGHTS
    meta = read_meta(weights)
    variants = args.variants.split(",")
    random.seed(args.seed)

    print(
        f"weights {weights}: trained on {len(meta['trained_on'])} photos, {len(meta['held_out'])} held out", flush=True
    )
    held_out, trained_on = meta["held_out"], meta["trained_on"]
    if args.limit:
        held_out, trained_on = held_out[: args.limit], trained_on[: args.limit]
    test = build(args.photos, held_out, args.work / "test", args.seed)
    train = build(args.photos, trained_on, args.work / "train", args.seed + 1)
    for bench, folder in ((test, args.work / "test"), (train, args.work / "train")):
        bench["ignore"] += ambiguous_pairs(bench, folder)
    print(f"benchmark: {len(test['truth'])} files from {len(test['photos'])} held-out photos", flush=True)

    rows, kind_rows, results, wrong = [], {}, {}, {}
    for variant in variants:
        threshold = None
        train_db, test_db = cache_db(args.work, "train", variant), cache_db(args.work, "test", variant)
        if variant not in ("full", "unit"):
            # a threshold nothing passes: every candidate pair is scored, none grouped
            never = 2.0 if variant != "phash" else -1.0
            _, train_scores, _ = run_variant(args.work / "train", train_db, variant, never, args.weights)
            threshold = best_threshold(train_scores, train, variant)
        # the training photos' benchmark at the settings used: what a default may be chosen on
        train_plan, train_scores, _ = run_variant(args.work / "train", train_db, variant, threshold, args.weights)
        train_m = evaluate(train_plan, train["truth"], train["kinds"], train_scores, ignore=train["ignore"])
        plan, scores, _ = run_variant(args.work / "test", test_db, variant, threshold, args.weights)
        m = evaluate(plan, test["truth"], test["kinds"], scores, ignore=test["ignore"])
        sim = similar_called_copy(plan, test["similar"])
        wrong[variant] = false_matches_by_photo(plan, test)
        label = variant if threshold is None else f"{variant} (t={threshold:.3f})"
        rows.append(fmt_row(label, m, sim, train_m.f1))
        kind_rows[variant] = m.recall_by_kind
        results[variant] = {
            "metrics": m.__dict__,
            "similar_called_copy": sim,
            "threshold": threshold,
            "train_metrics": train_m.__dict__,
        }
        print(rows[-1], flush=True)

    table = [
        "| variant | precision | recall | F1 | PR AUC | geometric recall | similar shots called copies | F1, training photos |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    kinds = sorted({k for r in kind_rows.values() for k in r})
    per_kind = ["| edit | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for k in kinds:
        cells = [f"{kind_rows[v].get(k, (float('nan'), 0))[0]:.2f}" for v in variants]
        per_kind.append(f"| {k} | " + " | ".join(cells) + " |")
    report = (
        "\n".join(table)
        + "\n\nRecall per edit kind (pairs of each copy with its original):\n\n"
        + "\n".join(per_kind)
        + "\n\nFalse matches by the two source pictures they join (the largest four; a pair of scenes with 25\n"
        + "copies each can make hundreds):\n\n"
        + "\n".join(
            f"- {v}: {sum(n for _, n in wrong[v])} in all; "
            + "; ".join(f"{a} + {b}: {n}" for (a, b), n in wrong[v][:4])
            for v in variants
        )
        + "\n"
    )
    print("\n" + report)
    (args.work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if args.markdown:
        write_between_markers(
            args.markdown, "accuracy", report, f"python benchmarks/accuracy.py --markdown {args.markdown}"
        )
    return 0


def write_between_markers(path: Path, name: str, body: str, command: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\nProduced by `{command}` on {time.strftime('%Y-%m-%d')}.\n\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
