"""The keeper policy: ordered rules that say which of two files is more worth keeping. Pure.

A policy is written as comma-separated rules, e.g.
`resolution,format:raw>heic>png>jpg,size,exif,oldest,path:~/Photos/Originals`; the first rule on
which two files differ decides, and the plan's reason names it. Ties on every rule go to the
shorter path, then the alphabetically first, so the choice is always deterministic.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from ndup.captures import capture_epoch
from ndup.errors import ExitCode, NdupError
from ndup.records import ImageRecord

# The default policy (what `--prefer` means when not given) and the rules put before it to pick the
# best of a group of similar shots (a burst).
DEFAULT_PREFER = "pixels,format,size,exif,oldest,path"
DEFAULT_PICK = "exposure,sharpness"

FORMAT_RANK = {
    "RAW": 6,
    "HEIF": 5, "AVIF": 5,
    "PNG": 4, "TIFF": 4, "BMP": 4,
    "JPEG": 3, "MPO": 3, "JPEG2000": 3,
    "WEBP": 2,
    "GIF": 1,
}  # fmt: skip
# Names a `format:` order may use, and the formats each one covers. RAW flavours (dng, cr2, nef, ...)
# name RAW files of that flavour.
FORMAT_NAMES = {
    "raw": {"RAW"}, "heic": {"HEIF"}, "heif": {"HEIF"}, "avif": {"AVIF"}, "png": {"PNG"}, "tiff": {"TIFF"},
    "tif": {"TIFF"}, "bmp": {"BMP"}, "jpg": {"JPEG", "MPO"}, "jpeg": {"JPEG", "MPO"}, "mpo": {"MPO"},
    "jp2": {"JPEG2000"}, "jpeg2000": {"JPEG2000"}, "webp": {"WEBP"}, "gif": {"GIF"},
}  # fmt: skip
RAW_FLAVOURS = frozenset(
    ["dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "pef", "srw", "x3f"]
)
# Sharpness values within this ratio of each other count as equal, so noise does not decide; so do
# clipped fractions within the same band (in percent), so exposure decides only on a clear difference.
SHARPNESS_STEP = 1.1
CLIPPED_BAND = 2.0

RULE_HELP = (
    "pixels (or resolution), format[:raw>heic>png>jpg], size, exif, oldest, newest, rating, sharpness, "
    "exposure, path[:DIR]"
)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _when(rec: ImageRecord) -> tuple[float, float]:
    mtime = rec.mtime_ns / 1e9
    taken = capture_epoch(rec.facts.capture_time)
    return (taken if taken is not None else mtime, mtime)


def _show_when(rec: ImageRecord) -> str:
    taken = capture_epoch(rec.facts.capture_time)
    if taken is None:
        return datetime.datetime.fromtimestamp(rec.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    return "taken " + datetime.datetime.fromtimestamp(taken).strftime("%Y-%m-%d %H:%M:%S")


def _format_label(rec: ImageRecord) -> str:
    f = rec.facts
    label = f"{f.format} ({f.subtype})" if f.subtype else f.format
    return f"{label} q{f.quality}" if f.quality else label


def _format_tokens(rec: ImageRecord) -> set[str]:
    f = rec.facts
    tokens = {name for name, formats in FORMAT_NAMES.items() if f.format in formats}
    if f.subtype:
        tokens.add(f.subtype.lower())
    return tokens


def is_under(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or inside it (both absolute, normalised)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _sharpness_key(rec: ImageRecord) -> int:
    s = rec.facts.sharpness or 0.0
    return -math.floor(math.log1p(s) / math.log(SHARPNESS_STEP))


@dataclass(frozen=True)
class Rule:
    """One policy rule: `name` as the user wrote it, `kind` what it compares, `arg` after the colon."""

    name: str
    kind: str
    arg: object = None

    def key(self, rec: ImageRecord):
        """Smaller = more worth keeping."""
        f = rec.facts
        if self.kind == "pixels":
            return -f.pixels
        if self.kind == "format":
            levels = self.arg or ()
            tokens = _format_tokens(rec)
            level = next((i for i, names in enumerate(levels) if tokens & names), len(levels))
            return (level, -FORMAT_RANK.get(f.format, 0), -(f.quality or 0))
        if self.kind == "size":
            return -rec.size
        if self.kind == "exif":
            return -f.exif_tags
        if self.kind == "oldest":
            return _when(rec)
        if self.kind == "newest":
            return tuple(-x for x in _when(rec))
        if self.kind == "rating":
            return -(f.rating or 0)
        if self.kind == "sharpness":
            return _sharpness_key(rec)
        if self.kind == "exposure":
            return math.floor((f.clipped if f.clipped is not None else 1.0) * 100 / CLIPPED_BAND)
        if self.kind == "under":
            return 0 if is_under(rec.path, self.arg) else 1
        return (len(rec.path), rec.path)  # path

    def show(self, rec: ImageRecord) -> str:
        """The value this rule looked at, for the reason string."""
        f = rec.facts
        if self.kind == "pixels":
            return f"{f.width}x{f.height}"
        if self.kind == "format":
            return _format_label(rec)
        if self.kind == "size":
            return human_bytes(rec.size)
        if self.kind == "exif":
            return f"{f.exif_tags} tags"
        if self.kind in ("oldest", "newest"):
            return _show_when(rec)
        if self.kind == "rating":
            return f"{f.rating} stars" if f.rating else "unrated"
        if self.kind == "sharpness":
            return f"{f.sharpness or 0:.0f}"
        if self.kind == "exposure":
            return f"{(f.clipped or 0) * 100:.0f}% clipped"
        if self.kind == "under":
            return "inside" if is_under(rec.path, self.arg) else "outside"
        return rec.path


_SIMPLE = {"pixels": "pixels", "resolution": "pixels", "size": "size", "exif": "exif", "oldest": "oldest",
           "newest": "newest", "rating": "rating", "sharpness": "sharpness", "exposure": "exposure",
           "path": "path"}  # fmt: skip


def _bad(message: str, where: str, hint: str = f"valid rules: {RULE_HELP}") -> NdupError:
    return NdupError(f"{message} in {where}", hint=hint, exit_code=ExitCode.USAGE)


def _parse_format_order(arg: str, token: str, where: str) -> tuple[frozenset[str], ...]:
    levels = []
    for level in arg.split(">"):
        names: set[str] = set()
        for name in level.split("="):
            name = name.strip().lower().lstrip(".")
            if name in FORMAT_NAMES or name in RAW_FLAVOURS:
                names.add(name)
            else:
                known = ", ".join([*sorted(FORMAT_NAMES), "or a RAW flavour (dng, cr2, nef, ...)"])
                raise _bad(f"unknown format {name!r} in keeper rule {token!r}", where, f"formats: {known}")
        levels.append(frozenset(names))
    return tuple(levels)


def parse_rule(token: str, where: str) -> Rule:
    name, _, arg = token.partition(":")
    kind = name.strip().lower()
    if kind in _SIMPLE and not arg:
        return Rule(token, _SIMPLE[kind])
    if kind == "format":
        return Rule(token, "format", _parse_format_order(arg, token, where) if arg else None)
    if kind == "path" and arg:
        folder = os.path.normpath(os.path.abspath(os.path.expanduser(arg.strip())))
        return Rule(token, "under", folder)
    if kind in _SIMPLE:
        raise _bad(f"keeper rule {name!r} takes no argument (got {token!r})", where)
    raise _bad(f"unknown keeper rule {token!r}", where)


@dataclass(frozen=True)
class Policy:
    """Ordered rules; `key(rec)` sorts the most worth keeping first, `explain` says which rule decided."""

    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, text: str, where: str = "--prefer") -> Policy:
        """`where` names the setting in errors (a flag, or a config file key and path)."""
        tokens = [t.strip() for t in text.split(",") if t.strip()]
        if not tokens:
            raise _bad("an empty keeper policy", where)
        return cls(tuple(parse_rule(t, where) for t in tokens))

    def then(self, other: Policy) -> Policy:
        """This policy's rules, then `other`'s."""
        return Policy(self.rules + other.rules)

    @property
    def text(self) -> str:
        return ",".join(r.name for r in self.rules)

    def key(self, rec: ImageRecord) -> tuple:
        return (*(r.key(rec) for r in self.rules), (len(rec.path), rec.path))

    def rank(self, images: list[ImageRecord]) -> Callable[[int], tuple]:
        """A rank callable over indices into `images` (what group.build_groups takes)."""
        return [self.key(im) for im in images].__getitem__

    def explain(self, keeper: ImageRecord, other: ImageRecord) -> str:
        """Why the keeper was preferred to `other`: the first rule that tells them apart, with both values."""
        for rule in self.rules:
            if rule.key(keeper) != rule.key(other):
                if rule.kind == "path":
                    return "path (shorter, or first in order)"
                if rule.kind == "under":
                    return f"{rule.name} ({rule.show(keeper)} vs {rule.show(other)} {rule.arg})"
                return f"{rule.name} ({rule.show(keeper)} vs {rule.show(other)})"
        return "path (the files tie on every rule)"


DEFAULT_POLICY = Policy.parse(DEFAULT_PREFER)


def keeper_policies(prefer: str = DEFAULT_PREFER, pick: str = DEFAULT_PICK) -> tuple[Policy, Policy]:
    """(policy for copies, policy for the pick of similar shots: the `pick` rules, then `prefer`'s)."""
    copies = Policy.parse(prefer, "the keeper policy (--prefer)")
    return copies, Policy.parse(pick, "the similar-shot pick (--pick)").then(copies)
