"""Sidecar files: metadata written next to an image, which must travel with it when it is moved or
trashed, and come back with it on undo.

Next to `IMG_1.HEIC` a photo tool may keep
  `IMG_1.xmp`, `IMG_1.HEIC.xmp`                 (Lightroom, Capture One, darktable, digiKam: XMP metadata),
  `IMG_1.aae`                                   (Apple Photos: the edit recipe),
  `IMG_1.HEIC.json`, `IMG_1.json`,              (Google Takeout: dates, places, descriptions)
  `IMG_1.HEIC.supplemental-metadata.json`.
Names are compared without regard to case. A sidecar named after the full file name belongs to that
file alone. One named after the stem only (`IMG_1.xmp`) belongs to the image only when no other
photo or video in the folder has that stem: `IMG_1.CR2` + `IMG_1.JPG` (or a Live Photo's `IMG_1.MOV`)
share `IMG_1.xmp`, and it stays where it is so the file that remains keeps its metadata.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ndup.formats import IMAGE_EXTENSIONS

SIDECAR_EXTENSIONS = frozenset({".xmp", ".aae", ".json"})
# Media that can share a stem-named sidecar with a photo (Live Photos pair a HEIC with a MOV).
_VIDEO_EXTENSIONS = frozenset({".mov", ".mp4", ".m4v", ".avi", ".mts", ".m2ts", ".3gp", ".mkv"})
_TAKEOUT_SUFFIX = ".supplemental-metadata"


def _listing(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


def sidecars_of(path: str | os.PathLike, siblings: Iterable[str] | None = None) -> list[Path]:
    """The sidecar files that belong to the image at `path` alone, sorted; [] when it has none.

    `siblings` are the names of the files in its folder; when omitted the folder is listed (so call
    this before moving the image). A sidecar itself, or a path with no stem, has no sidecars.
    """
    path = Path(path)
    name, stem = path.name.lower(), path.stem.lower()
    if not stem or path.suffix.lower() in SIDECAR_EXTENSIONS:
        return []
    names = list(siblings) if siblings is not None else _listing(path.parent)
    shares_stem = any(
        n.lower() != name
        and os.path.splitext(n)[0].lower() == stem
        and os.path.splitext(n)[1].lower() in (IMAGE_EXTENSIONS | _VIDEO_EXTENSIONS)
        for n in names
    )
    out = []
    for n in sorted(names):
        base, ext = os.path.splitext(n.lower())
        if ext not in SIDECAR_EXTENSIONS:
            continue
        if base in (name, name + _TAKEOUT_SUFFIX) or (base == stem and not shares_stem):
            out.append(path.parent / n)
    return out
