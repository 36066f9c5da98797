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


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ndup" / "config.toml"


def load_config() -> dict:
    """The user's config file (TOML), or {} when there is none. See README, "Configuration"."""
    import tomllib

    from ndup.errors import NdupError

    path = config_path()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise NdupError(f"cannot read the config file {path}: {e}", hint="fix or remove it") from None


def protected_folders() -> tuple[str, ...]:
    """Folders `ndup apply` never touches, from the config file's `[apply] protect = [...]`."""
    from ndup.errors import NdupError

    value = load_config().get("apply", {}).get("protect", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NdupError(
            f"{config_path()}: [apply] protect must be a list of folders", hint='e.g. protect = ["~/Photos/Originals"]'
        )
    return tuple(os.path.expanduser(v) for v in value)
