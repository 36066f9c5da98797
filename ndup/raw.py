"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, ...): the only module that talks to rawpy.

Developing a RAW is slow, and nearly every camera embeds a large JPEG preview of what it shot:
`RawFile.preview` returns that (fast), `RawFile.develop` is the fallback (a half-size demosaic)
for files whose preview is missing or small. Pixels come back as JPEG bytes or numpy arrays;
`decode` turns them into images. `exif_blobs` finds the EXIF a RAW container carries, for the
capture time and camera; it only reads bytes, so it needs no rawpy.
"""

from __future__ import annotations

import datetime
import io
import struct

import numpy as np

# LibRaw's `flip` code -> the EXIF orientation value that asks for the same turn.
_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
# Olympus and Panasonic RAWs are TIFFs with their own magic number; with the standard one, any
# TIFF reader can walk their IFDs.
_TIFF_MAGIC_FIXES = {b"IIRO": b"II*\x00", b"IIRS": b"II*\x00", b"IIU\x00": b"II*\x00", b"MMOR": b"MM\x00*"}
# Canon CR3 (ISO base media) keeps its TIFF-structured metadata in these boxes.
_CR3_BOXES = {b"CMT1": "ifd0", b"CMT2": "exif", b"CMT4": "gps"}
_CR3_SEARCH_BYTES = 1 << 16


class RawUnavailable(Exception):
    """rawpy (LibRaw) is not installed."""


class NotRaw(Exception):
    """LibRaw does not recognise the data as any RAW format it knows."""


class RawError(Exception):
    """LibRaw recognised the file but could not read it."""


class RawFile:
    """An opened RAW file; use as a context manager."""

    def __init__(self, data: bytes):
        try:
            import rawpy
        except ImportError:
            raise RawUnavailable from None
        self._rawpy = rawpy
        try:
            self._raw = rawpy.imread(io.BytesIO(data))
        except rawpy.LibRawFileUnsupportedError:
            raise NotRaw from None
        except rawpy.LibRawError as e:
            raise RawError(_libraw_message(e)) from None

    def __enter__(self) -> RawFile:
        return self

    def __exit__(self, *exc) -> None:
        self._raw.close()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the developed image before orientation: the RAW's real size."""
        s = self._raw.sizes
        return int(s.width), int(s.height)

    @property
    def orientation(self) -> int:
        """The camera's orientation as an EXIF value (1: upright, 6: turn 90° clockwise, ...)."""
        return _FLIP_TO_EXIF.get(int(self._raw.sizes.flip), 1)

    def preview(self) -> bytes | np.ndarray | None:
        """The largest embedded preview, as stored (not turned): JPEG bytes or an RGB array; None if none."""
        rawpy = self._rawpy
        try:
            thumb = self._raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            return None
        except rawpy.LibRawError:
            return None  # a damaged preview: developing the RAW data may still work
        if thumb.format == rawpy.ThumbFormat.JPEG:
            return bytes(thumb.data)
        data = np.asarray(thumb.data)
        if data.ndim == 3 and data.shape[2] == 3 and data.dtype == np.uint8:
            return data
        return None

    def develop(self) -> np.ndarray:
        """Demosaic at half size with the camera's white balance: (H, W, 3) uint8, already upright."""
        try:
            return self._raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        except self._rawpy.LibRawError as e:
            raise RawError(_libraw_message(e)) from None

    @property
    def capture_time(self) -> datetime.datetime | None:
        """LibRaw's idea of the capture time (whole seconds, local clock); None when it has none."""
        try:
            when = self._raw.other.timestamp
        except Exception:
            return None
        return when if isinstance(when, datetime.datetime) and when.year > 1970 else None

    @property
    def lens(self) -> str | None:
        try:
            return self._raw.lens.model.strip() or None
        except Exception:
            return None


def _libraw_message(e: Exception) -> str:
    text = str(e).strip("b'\" ") or type(e).__name__
    return f"LibRaw: {text}"


def exif_blobs(data: bytes, subtype: str) -> dict[str, bytes]:
    """TIFF-structured metadata in a RAW container, keyed by what their first IFD holds.

    "tiff": a whole TIFF (IFD0 with the Exif and GPS IFDs it points to), for the TIFF-based RAWs;
    for CR3, "ifd0", "exif" and "gps": one TIFF per box, whose first IFD is that directory.
    Empty when the container has none (RAF keeps its EXIF in the embedded JPEG preview).
    """
    head = data[:4]
    if head in _TIFF_MAGIC_FIXES:
        return {"tiff": _TIFF_MAGIC_FIXES[head] + data[4:]}
    if head in (b"II*\x00", b"MM\x00*"):
        return {"tiff": data}
    if subtype != "CR3":
        return {}
    out: dict[str, bytes] = {}
    window = data[:_CR3_SEARCH_BYTES]
    for box, key in _CR3_BOXES.items():
        at = window.find(box)
        if at < 4:
            continue
        (size,) = struct.unpack(">I", window[at - 4 : at])
        blob = data[at + 4 : at - 4 + size]
        if blob[:4] in (b"II*\x00", b"MM\x00*"):
            out[key] = blob
    return out
