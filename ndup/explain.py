"""`ndup explain A B`: every piece of evidence about one pair, as the scan would weigh it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ndup.decode import analyze, load_rgb_array, save_contact_sheet
from ndup.errors import NdupError
from ndup.model.spec import SHIPPED_WEIGHTS
from ndup.records import Decoded, ImageRecord
from ndup.scan import cache_entry, pair_inputs, registration_view
from ndup.verify import CLASSES, FEATURES, DecisionUnit, pair_features


def _decoded(path: Path) -> Decoded:
    out = analyze(str(path))
    if not isinstance(out, Decoded):
        reason = getattr(out, "reason", "not an image")
        raise NdupError(f"cannot use {path}: {reason}", hint="explain needs two readable image files")
    return out


def _register(a: Path, b: Path):
    """What registration (ndup.registration) finds for the pair, or None; the scan asks it only for the
    pairs the decision unit does not call copies but thinks may be one scene."""
    from ndup.registration import register

    views = registration_view(str(a)), registration_view(str(b))
    return None if any(v is None for v in views) else register(*views)


def _registration_report(found) -> dict | None:
    if found is None:
        return None
    from ndup.registration import ANOTHER_FRAME

    return {
        "same_picture": found.same_picture,
        "another_frame": found.verdict == ANOTHER_FRAME,
        "motion_px": None if found.motion is None else round(found.motion, 3),
        "matching_keypoints": found.inliers,
        # smooth pictures are placed by their intensities: ECC correlation, and px a perspective fit moves
        "intensity_correlation": None if found.intensity is None else round(found.intensity, 4),
        "perspective_px": None if found.perspective is None else round(found.perspective, 2),
        "mirrored": found.mirrored,
        "contained": round(found.coverage, 4),
        "worst_block": round(found.worst_block, 4),
        "blocks": len(found.blocks),
        "summary": found.describe(),
    }


def explain_pair(
    a: Path, b: Path, *, weights: Path | None = None, device: str = "auto", save: Path | None = None
) -> dict:
    from ndup.model.embed import Embedder

    da, db = _decoded(a), _decoded(b)
    pixels = np.stack([da.pixels, db.pixels])
    aspects = np.array([d.facts.width / d.facts.height for d in (da, db)], dtype=np.float32)
    full = Embedder(device, weights, "full")
    unaligned = Embedder(device, weights, "multilayer")  # the same descriptor without the alignment stage
    out, plain = full.embed(pixels, aspects), unaligned.embed(pixels, aspects)
    images = [ImageRecord(str(d.path), d.size, d.mtime_ns, d.facts) for d in (da, db)]
    # through the cache's own form, so the pair is weighed exactly as a scan weighs it (second
    # orientation hypotheses, pixel-level check of the aligned thumbnails)
    entries = [cache_entry(out, i) for i in range(2)]
    embeddings = {d.facts.content_hash: (v, aux) for d, (v, aux, _) in zip((da, db), entries)}
    thumbs = {d.facts.content_hash: t for d, (_, _, t) in zip((da, db), entries)}
    found = _register(a, b)
    shown = 0 if found is None else found.verdict
    # the verdict weighs the registration found above, as a scan would, rather than registering again
    inputs = replace(pair_inputs(images, embeddings, thumbs.get), registered=lambda pairs: [shown] * len(pairs))
    pair = np.array([[0, 1]])
    features = pair_features(inputs, pair)[0]
    unit = DecisionUnit.load(weights or SHIPPED_WEIGHTS)
    probs = unit.probabilities(features[None])[0]
    verdict = unit.verdicts(inputs, pair)[0]
    report = {
        "files": [str(a), str(b)],
        "tier": verdict.tier or "none",
        "probabilities": {c: round(float(p), 4) for c, p in zip(CLASSES, probs)},
        "copy_threshold": unit.copy_threshold,
        "cosine_before_alignment": round(float(plain["vector"][0] @ plain["vector"][1]), 4),
        "cosine_after_alignment": round(float(features[0]), 4),
        "features": {name: round(float(v), 4) for name, v in zip(FEATURES, features)},
        "same_bytes": da.facts.content_hash == db.facts.content_hash,
        "alignment": [
            {"orientation": int(out["orientation"][i]), "affine": [round(float(v), 4) for v in out["affine"][i]]}
            for i in range(2)
        ],
        "sizes": [f"{d.facts.width}x{d.facts.height} {d.facts.format}" for d in (da, db)],
        "registration": _registration_report(found),
    }
    if save is not None:
        views = full.aligned_views(pixels, aspects)
        originals = [load_rgb_array(str(p), 512) for p in (a, b)]
        save_contact_sheet([originals, list(views)], save, captions=[["A", "B"], ["A aligned", "B aligned"]])
        report["saved"] = str(save)
    return report
