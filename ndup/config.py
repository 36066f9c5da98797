"""Settings for a run, where ndup keeps its files, and the config file.

Every setting has a built-in default; the config file (`$XDG_CONFIG_HOME/ndup/config.toml`, i.e.
`~/.config/ndup/config.toml`, or the file `NDUP_CONFIG` names) overrides it, an environment
variable overrides the file, and a command-line flag overrides everything. `effective()` resolves
them and remembers where each value came from (`ndup config show` prints it).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ndup.captures import BURST_SECONDS, BURST_SIMILARITY
from ndup.errors import ExitCode, NdupError
from ndup.policy import DEFAULT_PICK, DEFAULT_PREFER, Policy

DB_ENV = "NDUP_DB"
CONFIG_ENV = "NDUP_CONFIG"
DEVICES = ("auto", "cpu", "cuda", "mps")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ndup"


def default_db_path() -> Path:
    """`--db` beats `NDUP_DB` (the CLI resolves both), which beats the XDG cache dir."""
    env = os.environ.get(DB_ENV)
    return Path(env).expanduser() if env else cache_dir() / "ndup.db"


def config_path() -> Path:
    """The config file: `NDUP_CONFIG`, else `$XDG_CONFIG_HOME/ndup/config.toml` (~/.config/ndup/config.toml)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "ndup" / "config.toml"


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
    prefer: str = DEFAULT_PREFER  # the keeper policy (ndup.policy)
    pick: str = DEFAULT_PICK  # rules put first when picking the best of similar shots
    protect: tuple[str, ...] = ()  # absolute folders whose files are never proposed for deletion
    burst_seconds: float = BURST_SECONDS
    burst_similarity: float = BURST_SIMILARITY
    # Ablations for the accuracy benchmark: full | unit | aligned | multilayer | backbone | phash. "unit"
    # is the decision unit without registration; the others replace the decision unit by one threshold
    # (on the cosine, or on the pHash distance).
    variant: str = "full"
    threshold: float | None = None


# ---- the settings a config file can hold --------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    key: str  # "section.name", as in the file
    default: object
    kind: type  # str, int, float, bool or list (of strings)
    help: str
    env: str | None = None
    paths: bool = False  # values are paths: ~ is expanded and relative paths are made absolute


SETTINGS: tuple[Setting, ...] = (
    Setting("scan.roots", [], list, "folders `ndup scan` scans when none are named", paths=True),
    Setting("scan.exclude", [], list, "glob patterns of file or folder names (or relative paths) to skip"),
    Setting("scan.protect", [], list, "folders whose files are never proposed for deletion", paths=True),
    Setting("scan.hidden", False, bool, "include hidden files and folders"),
    Setting("scan.follow_links", False, bool, "follow symbolic links"),
    Setting("keeper.prefer", DEFAULT_PREFER, str, "the keeper policy: ordered rules", env="NDUP_PREFER"),
    Setting("keeper.pick", DEFAULT_PICK, str, "rules put first to pick the best of similar shots", env="NDUP_PICK"),
    Setting("thresholds.neighbors", 10, int, "nearest neighbours checked per image"),
    Setting("thresholds.burst_seconds", BURST_SECONDS, float, "one camera's shots this close are a burst"),
    Setting("thresholds.burst_similarity", BURST_SIMILARITY, float, "embedding cosine for burst shots to group"),
    Setting("run.device", "auto", str, f"where the network runs: {', '.join(DEVICES)}", env="NDUP_DEVICE"),
    Setting("run.workers", 0, int, "decoding processes; 0 = one per CPU core", env="NDUP_WORKERS"),
    Setting("run.batch_size", 32, int, "images read, embedded and saved together"),
    Setting(
        "run.weights",
        "",
        str,
        "a model trained with `ndup train` [default: the shipped one]",
        env="NDUP_WEIGHTS",
        paths=True,
    ),
    Setting("cache.db", "", str, "the SQLite cache [default: $XDG_CACHE_HOME/ndup/ndup.db]", env=DB_ENV, paths=True),
)
BY_KEY = {s.key: s for s in SETTINGS}
_MINIMUM = {"thresholds.neighbors": 1, "run.workers": 0, "run.batch_size": 1, "thresholds.burst_seconds": 0}
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false",
               list: "a list of strings"}  # fmt: skip


@dataclass(frozen=True)
class Effective:
    """Resolved settings: value and source ("default", "file PATH:LINE", "env NAME" or "flag --NAME") by key."""

    values: dict[str, object]
    sources: dict[str, str]
    file: Path
    file_found: bool

    def __getitem__(self, key: str):
        return self.values[key]


def _config_error(message: str, hint: str) -> NdupError:
    return NdupError(message, hint=hint, exit_code=ExitCode.USAGE)


def _line_of(text: str, section: str, name: str | None = None) -> int | None:
    """The line of `name = ...` in [section] (top level: section ""), or of the [section] header itself."""
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1)
            if name is None and current == section:
                return number
        elif current == (section if name else "") and re.match(rf"\s*{re.escape(name or section)}\s*=", line):
            return number
    return None


def _check(setting: Setting, value: object, where: str) -> object:
    """A value of the right type and range, or a clear error naming `where` it came from."""
    kind = setting.kind
    ok = (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
        if kind is list
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is float
        else isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    )
    if not ok:
        raise _config_error(f"{setting.key} must be {_TYPE_NAMES[kind]}, not {value!r} ({where})", "see README")
    if kind is float:
        value = float(value)
    if setting.key in _MINIMUM and value < _MINIMUM[setting.key]:
        raise _config_error(f"{setting.key} must be at least {_MINIMUM[setting.key]} ({where})", "see README")
    if setting.key == "thresholds.burst_similarity" and not -1.0 <= value <= 1.0:
        raise _config_error(f"{setting.key} must be a cosine between -1 and 1 ({where})", "see README")
    if setting.key == "run.device" and value not in DEVICES:
        raise _config_error(f"unknown device {value!r} ({where})", f"choose one of {', '.join(DEVICES)}")
    if setting.key in ("keeper.prefer", "keeper.pick"):
        Policy.parse(value, where[len("flag ") :] if where.startswith("flag ") else f"{setting.key} ({where})")
    if setting.paths:
        expand = lambda p: os.path.abspath(os.path.expanduser(p)) if p else p  # noqa: E731
        value = [expand(v) for v in value] if kind is list else expand(value)
    return value


def read_config_file(path: Path) -> dict[str, tuple[object, str]]:
    """{key: (value, "file PATH:LINE")} from a config file; {} when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise _config_error(f"cannot read the config file {path}: {reason}", "fix or remove it") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _config_error(f"config file {path} is not valid TOML: {e}", "fix that line, or remove the file") from None
    out: dict[str, tuple[object, str]] = {}
    sections = sorted({s.key.split(".")[0] for s in SETTINGS})
    for section, table in doc.items():
        if not isinstance(table, dict) or section not in sections:
            line = _line_of(text, section)
            raise _config_error(
                f"unknown section [{section}] in config file {path}" + (f":{line}" if line else ""),
                f"sections are {', '.join(f'[{s}]' for s in sections)}; see `ndup config show`",
            )
        for name, value in table.items():
            key, line = f"{section}.{name}", _line_of(text, section, name)
            where = f"file {path}" + (f":{line}" if line else "")
            if key not in BY_KEY:
                raise _config_error(
                    f"unknown setting {name!r} in [{section}] of config file {path}" + (f":{line}" if line else ""),
                    f"settings are {', '.join(s.key for s in SETTINGS)}",
                )
            out[key] = (_check(BY_KEY[key], value, where), where)
    return out


def _from_env(setting: Setting, text: str) -> object:
    where = f"environment variable {setting.env}"
    try:
        value = {int: int, float: float, str: str}[setting.kind](text)
    except ValueError:
        raise _config_error(
            f"{setting.env}={text!r} must be {_TYPE_NAMES[setting.kind]}", f"fix or unset {setting.env}"
        ) from None
    return _check(setting, value, where)


def effective(flags: dict[str, tuple[object, str]] | None = None) -> Effective:
    """Defaults < config file < environment < flags; `flags` is {key: (value, "flag --name")} of flags given."""
    path = config_path()
    from_file = read_config_file(path)
    values, sources = {}, {}
    for s in SETTINGS:
        values[s.key], sources[s.key] = s.default, "default"
        if s.key in from_file:
            values[s.key], sources[s.key] = from_file[s.key]
        if s.env and os.environ.get(s.env):
            values[s.key], sources[s.key] = _from_env(s, os.environ[s.env]), f"env {s.env}"
        if flags and s.key in flags:
            value, source = flags[s.key]
            values[s.key], sources[s.key] = _check(s, value, source), source
    if not values["cache.db"]:
        values["cache.db"] = str(default_db_path())
    return Effective(values, sources, path, path.is_file())


def scan_settings(roots: list[Path] | None, flags: dict[str, tuple[object, str]]) -> ScanSettings:
    """The settings of one `ndup scan`: folders from the command line, else from the config file."""
    eff = effective(flags)
    chosen = tuple(roots) if roots else tuple(Path(r) for r in eff["scan.roots"])
    if not chosen:
        raise NdupError(
            "no folder to scan",
            hint=f"name one or more folders, e.g. ndup scan ~/Photos, or set roots in [scan] of {eff.file}",
            exit_code=ExitCode.USAGE,
        )
    return ScanSettings(
        roots=chosen,
        db_path=Path(eff["cache.db"]),
        hidden=eff["scan.hidden"],
        follow_links=eff["scan.follow_links"],
        excludes=tuple(eff["scan.exclude"]),
        device=eff["run.device"],
        workers=eff["run.workers"],
        batch_size=eff["run.batch_size"],
        neighbors=eff["thresholds.neighbors"],
        prefer=eff["keeper.prefer"],
        pick=eff["keeper.pick"],
        protect=tuple(eff["scan.protect"]),
        burst_seconds=eff["thresholds.burst_seconds"],
        burst_similarity=eff["thresholds.burst_similarity"],
        weights=Path(eff["run.weights"]) if eff["run.weights"] else None,
    )
