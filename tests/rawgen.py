"""Camera RAW test files, generated: a minimal TIFF writer and DNGs that LibRaw opens.

A DNG here is what cameras and converters write: IFD0 holds the preview (uncompressed RGB or a JPEG)
and the camera tags, a SubIFD holds the Bayer (RGGB) mosaic, and IFD0 points to an Exif IFD
(capture time, lens) and a GPS IFD. Nothing is downloaded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10
# The sensor "sees" linear sRGB, so a developed DNG comes out close to the image it was made from.
_XYZ_TO_LINEAR_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)
_SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, UNDEFINED: 1, SRATIONAL: 8}


@dataclass(frozen=True)
class Ref:
    """A LONG entry whose value is the offset of another IFD ("ifd") or of a data blob ("blob")."""

    kind: str
    index: int


def _pack(typ: int, values) -> bytes:
    if typ == ASCII:
        return values.encode() + b"\x00"
    if typ == UNDEFINED:
        return bytes(values)
    if typ in (RATIONAL, SRATIONAL):
        fmt = "<II" if typ == RATIONAL else "<ii"
        return b"".join(struct.pack(fmt, n, d) for n, d in values)
    fmt = {BYTE: "B", SHORT: "H", LONG: "I"}[typ]
    return struct.pack(f"<{len(values)}{fmt}", *values)


def tiff_bytes(ifds: list[list[tuple[int, int, object]]], blobs: list[bytes]) -> bytes:
    """A little-endian TIFF: IFD 0 is the first; entries are (tag, type, values) or (tag, LONG, Ref)."""
    blob_at, pos = [], 8
    for b in blobs:
        blob_at.append(pos)
        pos += len(b) + len(b) % 2
    ifd_at, ifd_sizes = [], []
    for entries in ifds:
        size = 2 + 12 * len(entries) + 4
        for _tag, typ, values in entries:
            if not isinstance(values, Ref):
                n = len(_pack(typ, values))
                size += (n + n % 2) if n > 4 else 0
        ifd_at.append(pos)
        ifd_sizes.append(size)
        pos += size
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at[0]))
    for b in blobs:
        out += b + b"\x00" * (len(b) % 2)
    for i, entries in enumerate(ifds):
        extra_at = ifd_at[i] + 2 + 12 * len(entries) + 4
        table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for tag, typ, values in sorted(entries, key=lambda e: e[0]):
            if isinstance(values, Ref):
                target = ifd_at[values.index] if values.kind == "ifd" else blob_at[values.index]
                table += struct.pack("<HHI", tag, LONG, 1) + struct.pack("<I", target)
                continue
            data = _pack(typ, values)
            count = len(data) // _SIZES[typ]
            if len(data) <= 4:
                table += struct.pack("<HHI", tag, typ, count) + data.ljust(4, b"\x00")
            else:
                table += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
                extra += data + b"\x00" * (len(data) % 2)
        table += struct.pack("<I", 0)
        out += table + extra
    return bytes(out)


def mosaic(rgb: np.ndarray, white: int = 4095) -> np.ndarray:
    """An RGGB Bayer mosaic of an sRGB image, in linear light, as a sensor would record it."""
    lin = (rgb.astype(np.float32) / 255.0) ** 2.2 * white
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = lin[0::2, 0::2, 0]
    cfa[0::2, 1::2] = lin[0::2, 1::2, 1]
    cfa[1::2, 0::2] = lin[1::2, 0::2, 1]
    cfa[1::2, 1::2] = lin[1::2, 1::2, 2]
    return cfa


def _deg(value: float) -> list[tuple[int, int]]:
    d = int(value)
    m = int((value - d) * 60)
    s = round(((value - d) * 60 - m) * 60 * 100)
    return [(d, 1), (m, 1), (s, 100)]


def dng_bytes(
    sensor: Image.Image,
    *,
    preview: str | None = "jpeg",  # "jpeg", "bitmap" or None
    preview_side: int = 512,
    make: str = "Ndup",
    model: str = "TestCam 1",
    orientation: int = 1,
    taken: str | None = "2023:07:14 10:22:05",
    subsec: str | None = None,
    offset: str | None = None,
    lens: str | None = "Ndup 35mm F2",
    gps: tuple[float, float] | None = None,
) -> bytes:
    """A DNG of `sensor` (an RGB image as the sensor saw it: not yet turned by `orientation`)."""
    rgb = np.asarray(sensor.convert("RGB"))
    h, w = rgb.shape[:2]
    cfa = mosaic(rgb)
    blobs = [cfa.astype("<u2").tobytes()]
    raw_ifd = [
        (254, LONG, [0]), (256, LONG, [w]), (257, LONG, [h]), (258, SHORT, [16]), (259, SHORT, [1]),
        (262, SHORT, [32803]), (273, LONG, Ref("blob", 0)), (277, SHORT, [1]), (278, LONG, [h]),
        (279, LONG, [len(blobs[0])]), (284, SHORT, [1]), (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),
        (50717, LONG, [4095]),
    ]  # fmt: skip
    camera = [
        (271, ASCII, make), (272, ASCII, model), (274, SHORT, [orientation]),
        (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]), (50708, ASCII, f"{make} {model}"),
        (50721, SRATIONAL, [(round(v * 10000), 10000) for v in _XYZ_TO_LINEAR_SRGB]),  # ColorMatrix1
        (50778, SHORT, [21]),  # CalibrationIlluminant1: D65
        (50728, RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # AsShotNeutral: the mosaic is already white-balanced
    ]  # fmt: skip
    if preview:
        small = sensor.convert("RGB").copy()
        small.thumbnail((preview_side, preview_side))
        if preview == "jpeg":
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=92)
            data, compression, photometric = buf.getvalue(), 7, 6
        else:
            data, compression, photometric = np.asarray(small).tobytes(), 1, 2
        blobs.append(data)
        ifd0 = [
            *camera, (254, LONG, [1]), (256, LONG, [small.width]), (257, LONG, [small.height]),
            (258, SHORT, [8, 8, 8]), (259, SHORT, [compression]), (262, SHORT, [photometric]),
            (273, LONG, Ref("blob", 1)), (277, SHORT, [3]), (278, LONG, [small.height]), (279, LONG, [len(data)]),
            (284, SHORT, [1]), (330, LONG, Ref("ifd", 1)),
        ]  # fmt: skip
        ifds = [ifd0, raw_ifd]
    else:  # the mosaic itself in IFD0, as some converters write it
        ifd0 = camera + raw_ifd
        ifds = [ifd0]
    exif_ifd = []
    if taken:
        exif_ifd.append((36867, ASCII, taken))
    if subsec:
        exif_ifd.append((37521, ASCII, subsec))
    if offset:
        exif_ifd.append((36881, ASCII, offset))
    if lens:
        exif_ifd.append((42036, ASCII, lens))
    if not exif_ifd:
        exif_ifd.append((42016, ASCII, "0" * 32))  # ImageUniqueID: an Exif IFD is never empty
    ifd0.append((34665, LONG, Ref("ifd", len(ifds))))
    ifds.append(exif_ifd)
    if gps:
        lat, lon = gps
        ifds.append([(0, BYTE, [2, 3, 0, 0]), (1, ASCII, "N" if lat >= 0 else "S"), (2, RATIONAL, _deg(abs(lat))),
                     (3, ASCII, "E" if lon >= 0 else "W"), (4, RATIONAL, _deg(abs(lon)))])  # fmt: skip
        ifd0.append((34853, LONG, Ref("ifd", len(ifds) - 1)))
    return tiff_bytes(ifds, blobs)
