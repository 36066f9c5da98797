"""`ndup train`: learn the alignment stage, the descriptor projection and the decision unit.

Self-supervised on a folder of photos: every training pair is made by editing the photos with
`augment.copy_edit` (copies) and `augment.similar_shot` (second captures of a scene, the hard
negatives), so no labels are needed. Where the folder has a `SOURCES.json` with `group`/`relation`
entries (as `../shared/photos` does), labelled similar shots become extra hard negatives and
labelled copies extra positives, and a labelled group never straddles the train/holdout split.

Stages, each seeded and timed (the times go into the weights file):
1. orientation canonicalizer: the D4 choice must agree between two edits of one photo;
2. affine aligner: undo small rotations (supervised by the rotation applied) and frame the same
   content in a crop and in its original (supervised by the crop box);
3. views: the aligned, pooled backbone features of many edits of every photo (frozen backbone);
4. projection: per-part linear maps trained with a supervised contrastive loss;
5. decision unit: views of its own (`augment.library_copy`, `augment.similar_shot` from a moved
   viewpoint), then a small monotone network over their pair features, two heads (same scene, same
   picture), Platt-scaled on held-out photos.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ndup import structure
from ndup.decode import load_rgb_array, perceptual_hashes
from ndup.errors import NdupError
from ndup.model import augment
from ndup.model.align import UNDO_SIGN, dihedral
from ndup.model.descriptor import aligned_phash
from ndup.model.network import NdupNet, structure_thumbnails
from ndup.model.spec import DESCRIPTOR_DIM
from ndup.model.weights import save_weights
from ndup.verify import CLASSES, EVIDENCE, FEATURES, DecisionUnit, PairInputs, pair_features

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


@dataclass
class TrainConfig:
    photos: Path
    out: Path
    seed: int = 0
    holdout: float = 0.33  # fraction of photo groups never trained on (the accuracy benchmark uses them)
    validation: float = 0.2  # fraction of the training groups used for early stopping and calibration
    max_side: int = 512
    canonicalizer_steps: int = 400
    aligner_steps: int = 500
    batch: int = 32
    copies_per_photo: int = 30
    similar_per_photo: int = 6
    projection_steps: int = 600
    decision_steps: int = 1500
    threads: int = 0  # 0: all cores
    orientation_coverage: float = 0.99  # original and edit should share an orientation hypothesis this often
    max_second_share: float = 0.4  # at most this share of images get a second descriptor (CPU cost)
    # Unlabelled photo pairs whose plain-backbone cosine is at least this are treated as unknown
    # (a user's own folder has duplicates in it), never as negatives.
    ambiguous_cosine: float = 0.9


@dataclass
class Source:
    name: str
    path: Path
    group: str  # photos of one labelled group stay on one side of the split
    relation: str | None = None  # copy | similar-shot | different (from SOURCES.json)


@dataclass
class Views:
    """Many edited views of some photos, as the decision unit sees them."""

    pooled: torch.Tensor  # (V, sum(TAP_CHANNELS)) pooled backbone taps of the aligned views
    pooled_alt: torch.Tensor  # the same for the second orientation hypothesis; NaN rows where none
    photo: np.ndarray  # (V,) index of the source photo
    similar: np.ndarray  # (V,) bool: a synthetic second capture, not a copy
    phash_aligned: np.ndarray
    phash_aligned_alt: np.ndarray
    thumbs: list  # aligned greyscale thumbnails (uint8 arrays) for the pixel-level check
    thumbs_alt: list  # of the second hypothesis; None where there is none
    phash: np.ndarray
    dhash: np.ndarray
    width: np.ndarray
    height: np.ndarray


@contextlib.contextmanager
def torch_threads(n: int):
    """Small tensor ops (augmentations) run fastest single-threaded; big ones (the backbone) use every core."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Log:
    stages: dict = field(default_factory=dict)
    say: Callable[[str], None] = print

    def stage(self, name: str, started: float, **numbers) -> None:
        self.stages[name] = {"seconds": round(time.monotonic() - started, 1), **numbers}
        self.say(f"{name}: {json.dumps(self.stages[name])}")


# ---- data -------------------------------------------------------------------------------------


def collect_sources(folder: Path) -> list[Source]:
    labels = {}
    sources_json = folder / "SOURCES.json"
    if sources_json.exists():
        labels = {e["file"]: e for e in json.loads(sources_json.read_text())}
    out = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        name = str(path.relative_to(folder))
        entry = labels.get(name, {})
        relation = entry.get("relation", "").split(" ")[0] or None
        out.append(Source(name, path, entry.get("group") or name, relation))
    return out


def _fraction(key: str, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 2**32


def split_sources(sources: list[Source], holdout: float, validation: float) -> tuple[list, list, list]:
    """Deterministic train/validation/holdout split by group, from a hash of the group's name."""
    train, val, test = [], [], []
    for s in sources:
        if _fraction(s.group, "holdout") < holdout:
            test.append(s)
        elif _fraction(s.group, "validation") < validation:
            val.append(s)
        else:
            train.append(s)
    return train, val, test


def load_images(sources: list[Source], max_side: int) -> tuple[list[Source], list[torch.Tensor]]:
    """Decode the photos; flat images (a blank wallpaper) teach nothing and are left out."""
    kept, images = [], []
    for s in sources:
        try:
            rgb = load_rgb_array(str(s.path), max_side)
        except Exception as e:  # a bad file in a training folder is skipped, like in a scan
            print(f"skipping {s.name}: {e}", file=sys.stderr)
            continue
        if rgb.std() < 4.0:
            continue
        kept.append(s)
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255))
    return kept, images


def _downscaled(images: list[torch.Tensor], side: int) -> list[torch.Tensor]:
    out = []
    for x in images:
        s = min(1.0, side / max(x.shape[1:]))
        out.append(augment.TF.resize(x, [max(8, round(x.shape[1] * s)), max(8, round(x.shape[2] * s))], antialias=True))
    return out


# ---- stage 1: orientation canonicalizer ------------------------------------------------------


def _mild_edit(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < 0.5:
        s = rng.uniform(0.2, 0.7)
        x = augment.TF.resize(x, [max(16, int(x.shape[1] * s)), max(16, int(x.shape[2] * s))], antialias=True)
    x = augment.photometric(x, rng)
    return augment.squash(augment.jpeg(x, int(rng.integers(25, 92))))


def _canonicalizer_edit(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    u = rng.random()
    if u < 0.45:
        return _mild_edit(x, rng)
    if u < 0.75:
        crop = augment.apply_crop(x, augment.crop_box(rng, rng.uniform(0.55, 0.95)))
        return augment.squash(augment.jpeg(crop, int(rng.integers(40, 92))))
    return augment.squash(augment.copy_edit(x, rng, right_angles=False))


def orientation_agreement(
    net: NdupNet, images: list[torch.Tensor], rng: np.random.Generator, per_image: int = 4
) -> float:
    """How often an edited, randomly turned or mirrored copy gets the same canonical view as its original."""
    hits = []
    with torch.no_grad():
        for x in images:
            base = augment.squash(x)[None]
            canon_base, _ = net.canonicalizer(base)
            for _ in range(per_image):
                y = dihedral(_mild_edit(x, rng)[None], int(rng.integers(0, 8)))
                canon_y, _ = net.canonicalizer(y)
                small = [F.interpolate(dihedral(canon_y, g), size=16, mode="area") for g in range(8)]
                ref = F.interpolate(canon_base, size=16, mode="area")
                errors = [float((ref - s).abs().mean()) for s in small]
                hits.append(int(np.argmin(errors)) == 0)
    return float(np.mean(hits))


def train_canonicalizer(net, images, val_images, cfg, rng, log) -> None:
    started = time.monotonic()
    model = net.canonicalizer
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=cfg.canonicalizer_steps)
    for _ in range(cfg.canonicalizer_steps):
        idx = rng.integers(0, len(images), cfg.batch)
        x = torch.stack([_canonicalizer_edit(images[i], rng) for i in idx])
        y = torch.stack([_canonicalizer_edit(images[i], rng) for i in idx])
        lx, ly = model.logits(x), model.logits(y)
        # Self-agreement: both edits are pushed, with a margin, towards the orientation they jointly prefer.
        target = (lx.detach().log_softmax(1) + ly.detach().log_softmax(1)).argmax(1)
        loss = F.cross_entropy(lx, target) + F.cross_entropy(ly, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    agreement = orientation_agreement(net, val_images, np.random.default_rng(cfg.seed + 1))
    margin, coverage, share = calibrate_second_margin(net, val_images, np.random.default_rng(cfg.seed + 3), cfg)
    log.stage(
        "canonicalizer", started, steps=cfg.canonicalizer_steps, validation_agreement=round(agreement, 4),
        second_margin=round(margin, 3), agreement_with_second=round(coverage, 4), second_share=round(share, 3),
    )  # fmt: skip


def calibrate_second_margin(net, images, rng, cfg, per_image: int = 6) -> tuple[float, float, float]:
    """Choose when an image also gets its runner-up orientation: the smallest log-probability margin at
    which original and edit share a hypothesis `cfg.orientation_coverage` of the time, capped so that
    at most `cfg.max_second_share` of images pay for a second descriptor."""
    model = net.canonicalizer
    rows = []
    with torch.no_grad():
        for x in images:
            base = model.logits(augment.squash(x)[None]).log_softmax(1)[0]
            for _ in range(per_image):
                edited = (
                    _mild_edit(x, rng)
                    if rng.random() < 0.6
                    else augment.squash(augment.apply_crop(x, augment.crop_box(rng, rng.uniform(0.6, 0.95))))
                )
                other = model.logits(edited[None]).log_softmax(1)[0]
                rows.append((base.topk(2), other.topk(2)))

    def evaluate(tau: float) -> tuple[float, float]:
        hits, live = [], []
        for (vx, ix), (vy, iy) in rows:
            hx = {int(ix[0])} | ({int(ix[1])} if vx[0] - vx[1] < tau else set())
            hy = {int(iy[0])} | ({int(iy[1])} if vy[0] - vy[1] < tau else set())
            hits.append(bool(hx & hy))
            live += [len(hx) == 2, len(hy) == 2]
        return float(np.mean(hits)), float(np.mean(live))

    best = (0.0, *evaluate(0.0))
    for tau in np.linspace(0.05, 6.0, 120):
        coverage, share = evaluate(float(tau))
        if share > cfg.max_second_share:
            break
        best = (float(tau), coverage, share)
        if coverage >= cfg.orientation_coverage:
            break
    model.second_margin.fill_(best[0])
    return best


# ---- stage 2: affine aligner -----------------------------------------------------------------


def _aligner_pair(x: torch.Tensor, rng: np.random.Generator):
    """An original and an edit with known geometry, both in one random D4 frame.

    Returns (x', y', aspect_x, aspect_y, angle_x, angle_y, box) where the angles are the rotations the
    aligner should predict, and box (or None) is where y's frame lies in x's, in [-1, 1] coordinates.
    """
    g = int(rng.integers(0, 8))
    mirror = -1.0 if g >= 4 else 1.0
    _, h0, w0 = x.shape
    xs = augment.squash(augment.photometric(x, rng, 0.5))
    box = None
    angle = 0.0
    y = x
    if rng.random() < 0.6:
        angle = float(rng.uniform(2, 22) * rng.choice([-1, 1]))
        y = augment.rotate_small(y, angle, straighten=rng.random() < 0.6, fill=float(rng.choice([0.0, 1.0])))
    elif rng.random() < 0.75:
        x0, y0, x1, y1 = augment.crop_box(rng, rng.uniform(0.45, 0.95))
        y = augment.apply_crop(y, (x0, y0, x1, y1))
        box = np.array([x0 + x1 - 1, y0 + y1 - 1, x1 - x0, y1 - y0])  # centre and size in [-1, 1] coords
    _, h1, w1 = y.shape
    ys = augment.squash(augment.jpeg(augment.photometric(y, rng, 0.5), int(rng.integers(30, 92))))
    xg, yg = dihedral(xs[None], g)[0], dihedral(ys[None], g)[0]
    ax, ay = w0 / h0, w1 / h1
    if g % 2 == 1:
        ax, ay = 1 / ax, 1 / ay
        if box is not None:
            box = box[[1, 0, 3, 2]]
    if box is not None:  # the box centre moves with the D4 element
        cx, cy = box[0], box[1]
        k, flip = g % 4, g >= 4
        if flip:
            cx = -cx
        for _ in range(k):  # rot90 counter-clockwise in image coordinates (y down): (x, y) -> (y, -x)
            cx, cy = cy, -cx
        box = np.array([cx, cy, box[2], box[3]])
    return xg, yg, ax, ay, 0.0, UNDO_SIGN * math.radians(angle) * mirror, box


def train_aligner(net, images, val_images, cfg, rng, log) -> None:
    started = time.monotonic()
    model = net.aligner
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=cfg.aligner_steps)

    def batch_loss(batch_images, r) -> tuple[torch.Tensor, float]:
        samples = [_aligner_pair(batch_images[i], r) for i in r.integers(0, len(batch_images), cfg.batch)]
        xs = torch.stack([s[0] for s in samples])
        ys = torch.stack([s[1] for s in samples])
        px = model.params(xs, torch.tensor([s[2] for s in samples], dtype=torch.float32))
        py = model.params(ys, torch.tensor([s[3] for s in samples], dtype=torch.float32))
        target_x = torch.tensor([s[4] for s in samples])
        target_y = torch.tensor([s[5] for s in samples])
        # What matters is that a copy and its original end up in the same frame: the relative angle is
        # the main target; a weak pull towards upright breaks ties for pictures without straight lines.
        relative = F.smooth_l1_loss(py[:, 0] - px[:, 0], target_y - target_x, beta=0.05)
        upright = F.smooth_l1_loss(px[:, 0], target_x, beta=0.05)
        angle_loss = relative + 0.2 * upright
        frame_terms = []
        for i, s in enumerate(samples):
            box = s[6]
            if box is None or not bool(model.frame_enabled):
                continue
            # y's window, mapped into x's frame, should be x's window
            b = torch.tensor(box, dtype=torch.float32)
            mapped_center = b[:2] + b[2:] * py[i, 2:]
            frame_terms.append(F.smooth_l1_loss(px[i, 2:], mapped_center, beta=0.05))
            scale_y_in_x = py[i, 1] * torch.sqrt(b[2] * b[3])
            frame_terms.append(F.smooth_l1_loss(torch.log(px[i, 1]), torch.log(scale_y_in_x), beta=0.05))
        frame_loss = torch.stack(frame_terms).mean() if frame_terms else torch.zeros(())
        angle_error = float(((py[:, 0] - px[:, 0]) - (target_y - target_x)).abs().mean().detach())
        return angle_loss + frame_loss, angle_error

    model.train()
    for _ in range(cfg.aligner_steps):
        loss, _ = batch_loss(images, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        _, val_error = batch_loss(val_images, np.random.default_rng(cfg.seed + 2))
    log.stage(
        "aligner",
        started,
        steps=cfg.aligner_steps,
        validation_relative_angle_error_deg=round(math.degrees(val_error), 2),
    )


# ---- stage 3: views --------------------------------------------------------------------------


def make_views(
    net,
    images: list[torch.Tensor],
    cfg: TrainConfig,
    rng: np.random.Generator,
    threads: int,
    for_decision: bool = False,
) -> Views:
    """Original + copies + synthetic second captures of every photo, through alignment and backbone.

    `for_decision`: the decision unit's views: copies as libraries hold them, and second captures
    that are really second captures (see `augment.library_copy`, `augment.similar_shot`)."""
    pooled, pooled_alt, photo, similar, pha, pha_alt, ph, dh, wid, hei, th, th_alt = ([] for _ in range(12))
    batch_x: list[torch.Tensor] = []
    batch_aspect: list[float] = []

    def flush():
        if not batch_x:
            return
        with torch.no_grad(), torch_threads(threads):
            x = torch.stack(batch_x)
            aligned, info, alt_index, alt_aligned, alt_info = net.hypotheses(x, torch.tensor(batch_aspect))
            p = net.pooled(aligned)
            pooled.append(p)
            pha.extend(int(v) & (2**64 - 1) for v in aligned_phash(aligned))
            th.extend(t.numpy() for t in structure_thumbnails(aligned, info["aspect"]))
            alt = torch.full_like(p, float("nan"))
            alt_hash = np.zeros(len(x), dtype=np.uint64)
            alt_thumbs = [None] * len(x)
            if alt_aligned is not None:
                alt[alt_index] = net.pooled(alt_aligned)
                alt_hash[alt_index.numpy()] = aligned_phash(alt_aligned).numpy().astype(np.int64).view(np.uint64)
                for i, t in zip(alt_index.tolist(), structure_thumbnails(alt_aligned, alt_info["aspect"])):
                    alt_thumbs[i] = t.numpy()
            pooled_alt.append(alt)
            pha_alt.extend(alt_hash)
            th_alt.extend(alt_thumbs)
        batch_x.clear()
        batch_aspect.clear()

    for pi, x in enumerate(images):
        kinds = ["original"] + ["copy"] * cfg.copies_per_photo + ["similar"] * cfg.similar_per_photo
        for kind in kinds:
            if kind == "original":
                view, (w, h) = x, (float(x.shape[2]), float(x.shape[1]))
            elif kind == "copy":
                view = augment.library_copy(x, rng) if for_decision else augment.copy_edit(x, rng, right_angles=True)
            else:
                view = augment.similar_shot(x, rng, tripod=0.0 if for_decision else 0.4)
            if kind != "original":
                w, h = float(view.shape[2]), float(view.shape[1])
            rgb = (view.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            p, d = perceptual_hashes(rgb)
            ph.append(int(p, 16))
            dh.append(int(d, 16))
            wid.append(w)
            hei.append(h)
            photo.append(pi)
            similar.append(kind == "similar")
            batch_x.append(augment.squash(view))
            batch_aspect.append(w / h)
            if len(batch_x) == 32:
                flush()
    flush()
    return Views(
        pooled=torch.cat(pooled),
        pooled_alt=torch.cat(pooled_alt),
        photo=np.array(photo),
        similar=np.array(similar),
        phash_aligned=np.array(pha, dtype=np.uint64),
        phash_aligned_alt=np.array(pha_alt, dtype=np.uint64),
        thumbs=th,
        thumbs_alt=th_alt,
        phash=np.array(ph, dtype=np.uint64),
        dhash=np.array(dh, dtype=np.uint64),
        width=np.array(wid, dtype=np.float64),
        height=np.array(hei, dtype=np.float64),
    )


# ---- stage 4: projection ---------------------------------------------------------------------


def _negative_mask(photo_a: np.ndarray, photo_b: np.ndarray, ambiguous: np.ndarray) -> np.ndarray:
    """True where two views come from photos known to be different (not the same, not ambiguous)."""
    return (photo_a[:, None] != photo_b[None, :]) & ~ambiguous[photo_a[:, None], photo_b[None, :]]


def projection_ap(net, views: Views, ambiguous: np.ndarray) -> float:
    """Average precision of copy pairs against different-photo pairs, by descriptor cosine."""
    with torch.no_grad():
        v = net.projection(views.pooled)
    keep = ~views.similar
    v, photo = v[keep], views.photo[keep]
    sims = (v @ v.T).numpy()
    iu = np.triu_indices(len(v), 1)
    same = photo[iu[0]] == photo[iu[1]]
    neg = _negative_mask(photo, photo, ambiguous)[iu]
    scores = sims[iu][same | neg]
    labels = same[same | neg]
    order = np.argsort(-scores)
    hits = np.cumsum(labels[order])
    return float((hits / np.arange(1, len(order) + 1))[labels[order]].mean())


def train_projection(net, views: Views, val_views: Views, ambiguous, val_ambiguous, cfg, rng, log) -> None:
    started = time.monotonic()
    model = net.projection
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    copies = np.flatnonzero(~views.similar)
    photos = np.unique(views.photo)
    by_photo = {p: copies[views.photo[copies] == p] for p in photos}
    best, best_state = -1.0, None
    temperature = 0.07
    for step in range(cfg.projection_steps):
        chosen = rng.choice(photos, size=min(16, len(photos)), replace=False)
        idx = np.concatenate([rng.choice(by_photo[p], size=min(12, len(by_photo[p])), replace=False) for p in chosen])
        z = model(views.pooled[idx])
        logits = z @ z.T / temperature
        pid = views.photo[idx]
        same = torch.from_numpy(pid[:, None] == pid[None, :])
        valid = torch.from_numpy(_negative_mask(pid, pid, ambiguous)) | same
        eye = torch.eye(len(idx), dtype=torch.bool)
        logits = logits.masked_fill(~valid | eye, -1e9)
        positives = same & ~eye
        log_prob = logits.log_softmax(dim=1)
        loss = -(log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
        loss = loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            model.eval()
            ap = projection_ap(net, val_views, val_ambiguous)
            model.train()
            if ap > best:
                best, best_state = ap, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.stage("projection", started, steps=cfg.projection_steps, validation_ap=round(best, 4))


# ---- stage 5: decision unit ------------------------------------------------------------------


def view_inputs(net, views: Views) -> PairInputs:
    with torch.no_grad():
        vectors = net.projection(views.pooled).numpy()
        has_alt = ~torch.isnan(views.pooled_alt[:, 0])
        alt = np.full_like(vectors, np.nan)
        if has_alt.any():
            alt[has_alt.numpy()] = net.projection(views.pooled_alt[has_alt]).numpy()
    prepared = [structure.prepare(t) for t in views.thumbs]
    prepared_alt = [None if t is None else structure.prepare(t) for t in views.thumbs_alt]

    def thumbs(i: int, use_alt: bool):
        return prepared_alt[i] if use_alt and prepared_alt[i] is not None else prepared[i]

    return PairInputs(
        vectors, views.phash_aligned, views.phash, views.dhash, views.width, views.height,
        alt_vectors=alt, alt_phash_aligned=views.phash_aligned_alt, thumbs=thumbs,
    )  # fmt: skip


def sample_pairs(views: Views, inputs: PairInputs, relation: np.ndarray, rng: np.random.Generator, hard_k: int = 6):
    """(pairs, labels) with labels 0 different, 1 similar, 2 copy.

    relation[p, q] between source photos: 0 different, 1 similar shots, 2 copies, -1 unknown (ambiguous).
    Hard negatives are each view's nearest views of other photos, as the kNN search would propose them.
    """
    n = len(views.photo)
    photo, sim = views.photo, views.similar
    pairs, labels = [], []
    for p in np.unique(photo):
        members = np.flatnonzero(photo == p)
        copies, shots = members[~sim[members]], members[sim[members]]
        # copies[0] is the original. Anchor most copy pairs on it: two heavy edits of one photo (say, crops
        # of opposite corners) may share no content at all, and labelling those "copy" teaches the unit
        # that copies can look unrelated, which costs confidence on every real copy.
        for c in copies[1:]:
            pairs.append((copies[0], c))
            labels.append(2)
        for _ in range(len(copies) // 2):
            a, b = rng.choice(copies[1:], 2, replace=False)
            pairs.append((a, b))
            labels.append(2)
        for s in shots:
            for c in rng.choice(copies, min(8, len(copies)), replace=False):
                pairs.append((s, c))
                labels.append(1)
        for s, t in itertools.pairwise(shots):
            pairs.append((s, t))
            labels.append(1)
    # labelled relations between different source photos (pool's similar shots and copies)
    for p, q in zip(*np.nonzero(np.triu(relation >= 1, 1))):
        va, vb = np.flatnonzero(photo == p), np.flatnonzero(photo == q)
        for _ in range(40):
            a, b = rng.choice(va), rng.choice(vb)
            # a synthetic second capture of either side is at most similar to the other photo
            label = 1 if (sim[a] or sim[b]) else int(relation[p, q])
            pairs.append((a, b))
            labels.append(label)
    sims = inputs.vectors @ inputs.vectors.T
    other = relation[photo[:, None], photo[None, :]] == 0
    sims = np.where(other, sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :hard_k]
    for a in range(n):
        for b in nearest[a]:
            if np.isfinite(sims[a, b]):
                pairs.append((a, b))
                labels.append(0)
    for _ in range(n * 4):
        a, b = rng.integers(0, n, 2)
        if relation[photo[a], photo[b]] == 0:
            pairs.append((a, b))
            labels.append(0)
    return np.array(pairs, dtype=np.int64), np.array(labels, dtype=np.int64)


class MonotoneUnit(torch.nn.Module):
    """The decision unit being trained: tanh layers with non-negative weights (softplus of free
    parameters) over sign-oriented features, two outputs (same scene, same picture)."""

    def __init__(self, signs: np.ndarray, hidden: int = 16, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        sizes = [len(signs), hidden, hidden, 2]
        self.register_buffer("signs", torch.tensor(signs, dtype=torch.float32))
        # softplus(-1 + noise) ~ 0.3: positive weights small enough that tanh starts unsaturated
        self.free = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(o, i, generator=gen) * 0.5 - 1.0) for i, o in itertools.pairwise(sizes)
        )
        self.biases = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(o, generator=gen) * 0.5) for o in sizes[1:])

    def weights(self) -> list[torch.Tensor]:
        return [F.softplus(v) for v in self.free]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * self.signs
        ws = self.weights()
        for i, (w, b) in enumerate(zip(ws, self.biases)):
            h = F.linear(h, w, b)
            if i < len(ws) - 1:
                h = torch.tanh(h)
        return h


def _platt(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Scale (kept positive, so the unit stays monotone) and shift that calibrate one head's scores."""
    log_a, b = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(scores * log_a.exp() + b, targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_a.detach().exp()), float(b.detach())


def train_decision_unit(train_feats, train_labels, val_feats, val_labels, cfg, log) -> dict[str, np.ndarray]:
    started = time.monotonic()
    signs = np.array([EVIDENCE[name] for name in FEATURES], dtype=np.float64)
    mean = train_feats.mean(0)
    std = train_feats.std(0) + 1e-6
    xt = torch.from_numpy((train_feats - mean) / std).float()
    xv = torch.from_numpy((val_feats - mean) / std).float()
    # head 0: the same scene (similar or copy); head 1: the same picture (copy)
    yt = torch.from_numpy(np.stack([train_labels >= 1, train_labels == 2], 1).astype(np.float32))
    yv = torch.from_numpy(np.stack([val_labels >= 1, val_labels == 2], 1).astype(np.float32))
    positives = yt.mean(0).clamp(1e-3, 1 - 1e-3)
    pos_weight = (1 - positives) / positives  # each head sees its two sides weighted alike
    unit = MonotoneUnit(signs, seed=cfg.seed)
    opt = torch.optim.Adam(unit.parameters(), lr=1e-2)
    # full batches: a few tens of thousands of pairs by 13 numbers are cheap, and the steps are steady
    for _ in range(cfg.decision_steps):
        loss = F.binary_cross_entropy_with_logits(unit(xt), yt, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        val_scores = unit(xv)
    # Platt scaling on held-out photos: calibrated probabilities
    calib = [_platt(val_scores[:, k], yv[:, k]) for k in range(2)]
    scale = np.array([c[0] for c in calib])
    shift = np.array([c[1] for c in calib])
    arrays = {"du_mean": mean, "du_std": std, "du_signs": signs, "du_scale": scale, "du_shift": shift}
    with torch.no_grad():
        for i, (w, b) in enumerate(zip(unit.weights(), unit.biases)):
            arrays[f"du_w{i}"] = w.numpy().astype(np.float64)
            arrays[f"du_b{i}"] = b.numpy().astype(np.float64)
    arrays["du_copy_threshold"] = np.array(0.5)
    arrays["du_similar_threshold"] = np.array(0.5)
    probs = DecisionUnit(arrays).probabilities(val_feats)
    copy_threshold = _copy_threshold(probs[:, 2], val_labels == 2)
    arrays["du_copy_threshold"] = np.array(copy_threshold)
    pred = probs[:, 2] >= copy_threshold
    truth = val_labels == 2
    precision = float((pred & truth).sum() / max(pred.sum(), 1))
    recall = float((pred & truth).sum() / max(truth.sum(), 1))
    similar_as_copy = float(pred[val_labels == 1].mean()) if (val_labels == 1).any() else 0.0
    different_as_similar = float((probs[val_labels == 0, 0] < 0.5).mean()) if (val_labels == 0).any() else 0.0
    log.stage(
        "decision_unit", started, steps=cfg.decision_steps, copy_threshold=round(copy_threshold, 3),
        validation_precision=round(precision, 4), validation_recall=round(recall, 4),
        validation_similar_called_copy=round(similar_as_copy, 4),
        validation_different_called_similar=round(different_as_similar, 4),
    )  # fmt: skip
    return arrays


def _copy_threshold(p_copy: np.ndarray, is_copy: np.ndarray, target_precision: float = 0.998) -> float:
    """The lowest probability threshold (at least 0.5) whose precision on held-out pairs reaches the target."""
    for t in np.linspace(0.5, 0.99, 50):
        pred = p_copy >= t
        if pred.sum() and (pred & is_copy).sum() / pred.sum() >= target_precision:
            return float(t)
    return 0.99


# ---- the whole run ---------------------------------------------------------------------------


def relations(sources: list[Source], images: list[torch.Tensor], net: NdupNet, threshold: float) -> np.ndarray:
    """Source-photo relation matrix: 2 copy, 1 similar, 0 different, -1 unknown; the diagonal is 2."""
    n = len(sources)
    rel = np.zeros((n, n), dtype=np.int64)
    with torch.no_grad():
        x = torch.stack([augment.squash(im) for im in images])
        head = net.backbone.forward_stages(
            net.backbone.normalize(F.interpolate(x, size=224, mode="bilinear", antialias=True)), (-1,)
        )[0]
        v = F.normalize(head.mean((2, 3)), dim=1)
        cos = (v @ v.T).numpy()
    for i in range(n):
        for j in range(n):
            if i == j:
                rel[i, j] = 2
                continue
            gi, gj = sources[i], sources[j]
            if gi.group == gj.group and gi.group != gi.name:
                rel[i, j] = {"copy": 2, "similar-shot": 1}.get(gi.relation or "", 0)
            elif cos[i, j] >= threshold:
                rel[i, j] = -1
    return rel


def quick_config(cfg: TrainConfig) -> TrainConfig:
    """A few steps of every stage: checks a setup (and the tests) in a minute, learns next to nothing."""
    from dataclasses import replace

    return replace(
        cfg, canonicalizer_steps=4, aligner_steps=4, copies_per_photo=3, similar_per_photo=1,
        projection_steps=100, decision_steps=100, batch=8,
    )  # fmt: skip


def train(cfg: TrainConfig, say: Callable[[str], None] = print) -> dict:
    started = time.monotonic()
    threads = cfg.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(1)  # stages switch to `threads` for the backbone's big batches
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    log = Log(say=say)

    sources = collect_sources(cfg.photos)
    if len(sources) < 10:
        raise NdupError(
            f"{cfg.photos} has {len(sources)} photos; training needs at least 10",
            hint="point ndup train at a larger folder",
        )
    train_src, val_src, test_src = split_sources(sources, cfg.holdout, cfg.validation)
    train_src, train_images = load_images(train_src, cfg.max_side)
    val_src, val_images = load_images(val_src, cfg.max_side)
    say(f"photos: {len(train_src)} to train on, {len(val_src)} to validate, {len(test_src)} held out")

    net = NdupNet()
    net.backbone.eval()
    # the alignment stage looks at 64-128 px thumbnails: smaller sources make its training 3x faster
    small, val_small = _downscaled(train_images, 320), _downscaled(val_images, 320)
    train_canonicalizer(net, small, val_small, cfg, rng, log)
    train_aligner(net, small, val_small, cfg, rng, log)

    t = time.monotonic()
    views = make_views(net, train_images, cfg, rng, threads)
    val_views = make_views(net, val_images, cfg, rng, threads)
    log.stage("views", t, train_views=len(views.photo), validation_views=len(val_views.photo))
    with torch_threads(threads):
        rel = relations(train_src, train_images, net, cfg.ambiguous_cosine)
        val_rel = relations(val_src, val_images, net, cfg.ambiguous_cosine)
    train_projection(net, views, val_views, rel < 0, val_rel < 0, cfg, rng, log)

    # The decision unit gets views of its own, made after every stage that shapes the embedding, so
    # that how it is trained never changes the embeddings a library has cached.
    t = time.monotonic()
    views = make_views(net, train_images, cfg, rng, threads, for_decision=True)
    val_views = make_views(net, val_images, cfg, rng, threads, for_decision=True)
    log.stage("decision_views", t, train_views=len(views.photo), validation_views=len(val_views.photo))
    t = time.monotonic()
    inputs, val_inputs = view_inputs(net, views), view_inputs(net, val_views)
    pairs, labels = sample_pairs(views, inputs, rel, rng)
    val_pairs, val_labels = sample_pairs(val_views, val_inputs, val_rel, rng)
    train_feats, val_feats = pair_features(inputs, pairs), pair_features(val_inputs, val_pairs)
    log.stage("pairs", t, train_pairs=len(pairs), validation_pairs=len(val_pairs))
    decision = train_decision_unit(train_feats, labels, val_feats, val_labels, cfg, log)

    meta = {
        "format": 1,
        "descriptor_dim": DESCRIPTOR_DIM,
        "features": list(FEATURES),
        "classes": list(CLASSES),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "trained_on": sorted(s.name for s in train_src),
        "validated_on": sorted(s.name for s in val_src),
        "held_out": sorted(s.name for s in test_src),
        "stages": log.stages,
        "seconds": round(time.monotonic() - started, 1),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
    }
    save_weights(cfg.out, net, decision, meta)
    say(f"wrote {cfg.out} in {meta['seconds']} s")
    return meta


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m ndup.model.train", description=__doc__.splitlines()[0])
    p.add_argument("photos", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--holdout", type=float, default=TrainConfig.holdout)
    args = p.parse_args(argv)
    train(TrainConfig(photos=args.photos, out=args.out, seed=args.seed, holdout=args.holdout))


if __name__ == "__main__":
    main()
