"""The last match's groups, kept beside the cache (`CACHE.match`): a rescan of an unchanged library
with unchanged settings reuses them instead of matching again, so it recomputes nothing.

Keyed by a fingerprint of everything a match depends on: the images in order (path, size, modification
time and content), the
match settings, the verifier (model and weights), the "not duplicates" sets and MATCH_VERSION. The
plan (keepers' actions, protected folders) is still made fresh from the groups. Derived data: a
missing, damaged or stale file means matching again, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ndup.group import Cluster
from ndup.records import ImageRecord

MATCH_VERSION = 2  # bump when matching or grouping code changes what it returns


def match_path(db_path: Path) -> Path:
    """`ndup.db` -> `ndup.db.match`."""
    return Path(f"{Path(db_path).expanduser()}.match")


def fingerprint(images: Sequence[ImageRecord], settings: dict, verifier: str, ignored: Iterable) -> str:
    h = hashlib.sha256()
    head = {"version": MATCH_VERSION, "verifier": verifier, "settings": settings}
    head["ignored"] = sorted(sorted(s) for s in ignored)
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for im in images:
        h.update(f"\0{im.path}\0{im.size}\0{im.mtime_ns}\0{im.facts.content_hash}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def load(path: Path, key: str) -> list[Cluster] | None:
    try:
        data = json.loads(Path(path).read_text())
        if data.get("fingerprint") != key:
            return None
        return [Cluster(t, k, tuple(m), tuple(s)) for t, k, m, s in data["clusters"]]
    except Exception:  # missing or damaged: match again
        return None


def save(path: Path, key: str, clusters: Sequence[Cluster]) -> None:
    """Written to a temporary name and renamed over the old file, so a crash leaves one or the other."""
    body = {"fingerprint": key, "clusters": [[c.tier, c.keeper, list(c.members), list(c.scores)] for c in clusters]}
    tmp = Path(f"{path}.tmp")
    try:
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
    except OSError:  # a full disk or a read-only folder costs the next rescan a match, nothing more
        tmp.unlink(missing_ok=True)
