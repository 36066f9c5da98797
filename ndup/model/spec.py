"""What identifies a model and how its descriptor is laid out, without importing torch.

A warm rescan never loads the network, and `verify` (numpy) reads the descriptor's parts from here.
"""

from __future__ import annotations

import hashlib
import zipfile
from functools import lru_cache
from pathlib import Path

from ndup.errors import NdupError

# Backbone blocks whose outputs are pooled (ends of stages 3-6) and -1 for the 1280-channel head.
TAPS = (4, 7, 10, 14, -1)
TAP_CHANNELS = (40, 80, 112, 192, 1280)
# Descriptor parts: (taps, projected width, weight of the part in the final cosine).
PARTS = (((0, 1), 48, 0.25), ((2, 3), 80, 0.25), ((4,), 128, 0.5))
DESCRIPTOR_DIM = sum(dim for _, dim, _ in PARTS)

VARIANTS = ("full", "unit", "aligned", "multilayer", "backbone", "phash")
BASELINE_ID = "lite0-gap-224@1"
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "ndup-v1.npz"


def part_bounds() -> list[tuple[int, int, float]]:
    """(start, end, weight) of each part in the descriptor."""
    out, start = [], 0
    for _, dim, weight in PARTS:
        out.append((start, start + dim, weight))
        start += dim
    return out


# Arrays that shape the embedding. The decision unit (`du_*`) and the record of how the file was made
# only judge pairs of embeddings, so recalibrating them must not throw away a library's cached vectors.
EMBEDDING_PREFIXES = ("can.", "ali.", "proj.")


@lru_cache(maxsize=8)
def _embedding_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.startswith(EMBEDDING_PREFIXES):
                h.update(name.encode())
                h.update(z.read(name))
    return h.hexdigest()[:12]


def missing_weights(path: Path) -> NdupError:
    return NdupError(f"weights file not found: {path}", hint="check --weights, or reinstall ndup")


def weights_digest(weights: Path) -> str:
    """Digest of the embedding part of a weights file (an .npz is a zip of .npy arrays)."""
    try:
        st = weights.stat()
    except FileNotFoundError:
        raise missing_weights(weights) from None
    try:
        return _embedding_digest(str(weights), st.st_mtime_ns, st.st_size)
    except (zipfile.BadZipFile, OSError) as e:
        raise NdupError(f"{weights} is not an ndup weights file ({e})", hint="train one with `ndup train`") from None


@lru_cache(maxsize=8)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def weights_file_digest(weights: Path) -> str:
    """Digest of a whole weights file, decision unit (`du_*`) included: what a pair's verdict depends
    on beyond the embeddings (`weights_digest` leaves the decision unit out on purpose)."""
    try:
        st = weights.stat()
        return _file_digest(str(weights), st.st_mtime_ns, st.st_size)
    except OSError as e:
        raise NdupError(f"cannot read the weights file {weights} ({e})", hint="check --weights") from None


def model_id(weights: Path | None = None, variant: str = "full") -> str:
    """The id that keys cached embeddings: new weights or another variant means new embeddings."""
    if variant == "backbone":
        return BASELINE_ID
    if variant == "phash":
        return "phash"
    # "unit" (the decision unit without registration) and "aligned" (a threshold instead of the
    # decision unit) judge the full network's embeddings
    network = "full" if variant in ("unit", "aligned") else variant
    return f"ndup-{network}-{weights_digest(weights or SHIPPED_WEIGHTS)}"
