"""Recognise image files by their first bytes, not by their names."""

from __future__ import annotations

import os

SNIFF_BYTES = 32

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}

# Camera RAW formats by extension; the TIFF-based ones are told apart from plain TIFF by their name.
RAW_EXTENSIONS = frozenset(
    [".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".pef",
     ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mos", ".mrw", ".rwl"]
)  # fmt: skip
IMAGE_EXTENSIONS = (
    frozenset(
        [".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".dib",
         ".heic", ".heif", ".hif", ".avif", ".jp2", ".j2k", ".mpo"]
    )
    | RAW_EXTENSIONS
)  # fmt: skip
# Containers that are always camera RAW, whatever the name.
_RAW_CONTAINERS = {"CR3": "CR3", "RAF": "RAF", "ORF": "ORF", "RW2": "RW2", "X3F": "X3F"}


def sniff(head: bytes) -> str | None:
    """The container format of a file from its first `SNIFF_BYTES` bytes, or None if not an image."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"  # Olympus: a TIFF with its own magic number
    if head[:4] == b"IIU\x00":
        return "RW2"  # Panasonic, likewise
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"  # TIFF and the TIFF-based RAW formats (DNG, CR2, NEF, ARW, PEF): see raw_subtype
    if head[:2] == b"BM" and len(head) >= 14:
        return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        # The compatible brands follow the major brand and its version: an AVIF may say "mif1 ... avif".
        compatible = {head[i : i + 4] for i in range(16, len(head) - 3, 4)}
        if brand in _AVIF_BRANDS or (brand in (b"mif1", b"msf1") and compatible & _AVIF_BRANDS):
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"
        if brand == b"crx ":
            return "CR3"
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if head.startswith(b"FOVb"):
        return "X3F"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    return None


def raw_subtype(container: str, path: str) -> str | None:
    """The RAW flavour (DNG, CR2, NEF, ...) of a file with this container, or None when it is no RAW.

    A TIFF container is a RAW only when its name says so (.dng, .cr2, .nef, ...): a camera writes
    those names, and a plain TIFF named like that is still tried as a TIFF if LibRaw refuses it.
    """
    if container in _RAW_CONTAINERS:
        return _RAW_CONTAINERS[container]
    ext = os.path.splitext(path)[1].lower()
    if container == "TIFF" and ext in RAW_EXTENSIONS:
        return ext[1:].upper()
    return None
