"""Settings for a run and where ndup keeps its files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DB_ENV = "NDUP_DB"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ndup"


def default_db_path() -> Path:
    """`--db` beats `NDUP_DB` (the CLI resolves both), which beats the XDG cache dir."""
    env = os.environ.get(DB_ENV)
    return Path(env).expanduser() if env else cache_dir() / "ndup.db"


@dataclass(frozen=True)
class ScanSettings:
    roots: tuple[Path, ...]
    db_path: Path = field(default_factory=default_db_path)
    hidden: bool = False
    follow_links: bool = False
    excludes: tuple[str, ...] = ()
    device: str = "auto"
    workers: int = 0  # 0: one per CPU core
    batch_size: int = 32
    neighbors: int = 10  # k of the k-nearest-neighbour candidate search
    weights: Path | None = None  # a user's retrained model (ndup train); None: the shipped one
    # Ablations for the accuracy benchmark: full | aligned | multilayer | backbone | phash. Every variant
    # but "full" replaces the decision unit by one threshold (on the cosine, or on the pHash distance).
    variant: str = "full"
    threshold: float | None = None
