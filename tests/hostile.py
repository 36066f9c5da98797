"""A corpus of hostile inputs for the hardening tests (issue 7), generated: nothing is downloaded.

Each `write_*` function writes one kind of bad (or merely unusual) file into a folder and returns a
`Case` per file it wrote: what a scan must make of it. `write_corpus` writes them all.

    image    decoded and cached as an image
    failure  listed as a failure whose reason contains `reason`
    other    neither an image by content nor by name: cached as such, never listed
    absent   not a file of the library (a link loop, a named pipe): skipped without a word
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from imagegen import synthetic_photo
from PIL import Image

# How many files the "10,000 tiny files" folder holds, and how many of them are (tiny) images: a few in
# CI, where each image costs a pass through the network on a shared CPU; all of them in the long run.
MANY_FILES = 10_000
MANY_IMAGES = 20


@dataclass(frozen=True)
class Case:
    name: str  # path relative to the corpus folder (invalid UTF-8 bytes as os.fsdecode gives them)
    expect: str  # image | failure | other | absent
    reason: str = ""  # for failures: a part of the reason a person reads

    def path(self, root: Path) -> str:
        return os.path.join(os.fspath(root), self.name)


def _photo(seed: int, width: int = 160, height: int = 120) -> Image.Image:
    return synthetic_photo(seed, width, height)


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _write(folder: Path, name: str, data: bytes) -> None:
    path = os.path.join(os.fspath(folder), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ---- damaged and empty files -------------------------------------------------------------------------


def write_truncated(folder: Path) -> list[Case]:
    """A JPEG, a PNG and a WebP cut off a third of the way into their image data."""
    cases = []
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")):
        data = _encode(_photo(1), fmt)
        _write(folder, f"truncated/cut.{ext}", data[: len(data) // 3])
        cases.append(Case(f"truncated/cut.{ext}", "failure", "truncated"))
    return cases


def write_garbled_tiff(folder: Path) -> list[Case]:
    """An LZW TIFF whose compressed strips are garbled: libtiff complains on stderr, ndup must not."""
    data = bytearray(_encode(_photo(1), "TIFF", compression="tiff_lzw"))
    for i in range(200, 2000, 7):
        data[i] ^= 0x5A
    _write(folder, "truncated/garbled_lzw.tif", bytes(data))
    return [Case("truncated/garbled_lzw.tif", "failure", "corrupt image data")]


def write_empty(folder: Path) -> list[Case]:
    _write(folder, "empty/zero.jpg", b"")
    _write(folder, "empty/zero.txt", b"")
    return [Case("empty/zero.jpg", "failure", "empty file (0 bytes)"), Case("empty/zero.txt", "other")]


def write_random_bytes(folder: Path) -> list[Case]:
    rng = random.Random(7)
    _write(folder, "random/noise.jpg", bytes(rng.randrange(256) for _ in range(4096)))
    return [Case("random/noise.jpg", "failure", "not an image")]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def huge_png(width: int = 100_000, height: int = 100_000, complete: bool = False) -> bytes:
    """A PNG header declaring width x height grey-blue pixels, and a few bytes of pixel data; with
    `complete`, all of them (compressed: ~3 KB per million pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    if complete:
        row, comp = b"\x00" + b"\x50\x60\x80" * width, zlib.compressobj(9)
        idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    else:
        idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def write_bombs(folder: Path) -> list[Case]:
    """Decompression bombs: a 100,000 x 100,000 PNG of a few hundred bytes, a JPEG declaring 65,000^2
    pixels, and a file that starts like a JPEG but is 1.5 GiB long; and the biggest kind of image that
    is still decoded, 13,000 x 13,000 pixels (169 megapixels, under Pillow's 179) in 0.5 MB."""
    _write(folder, "bombs/huge.png", huge_png())
    _write(folder, "bombs/big_but_allowed.png", huge_png(13_000, 13_000, complete=True))
    jpeg = bytearray(_encode(_photo(2, 64, 48), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    _write(folder, "bombs/huge.jpg", bytes(jpeg))
    # 1.5 GiB that start like a JPEG (a disk image, a broken download): sparse, so it takes no disk space
    _write(folder, "bombs/disk_image.jpg", _encode(_photo(2, 64, 48), "JPEG"))
    os.truncate(os.path.join(os.fspath(folder), "bombs/disk_image.jpg"), 3 << 29)
    return [
        Case("bombs/huge.png", "failure", "too large"),
        Case("bombs/huge.jpg", "failure", "too large"),
        Case("bombs/disk_image.jpg", "failure", "too large"),
        Case("bombs/big_but_allowed.png", "image"),
    ]


# ---- EXIF that lies -------------------------------------------------------------------------------------


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """The JPEG with an APP1 segment holding `payload` right after its SOI marker."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _ifd(entries: list[tuple[int, int, int, int]], next_ifd: int) -> bytes:
    """A little-endian TIFF IFD: (tag, type, count, value/offset) entries, then the next IFD's offset."""
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHII", tag, kind, count, value)
    return body + struct.pack("<I", next_ifd)


def write_broken_exif(folder: Path) -> list[Case]:
    """EXIF whose directories point at themselves, past the end of the file, or are random bytes."""
    jpeg = _encode(_photo(3), "JPEG", quality=90)
    tiff_header = b"II*\x00" + struct.pack("<I", 8)
    # IFD0 at offset 8: orientation 6, an EXIF sub-IFD and a GPS sub-IFD that are IFD0 itself, and a
    # "next IFD" that is IFD0 again: a reader that follows pointers blindly never ends.
    loop = _ifd([(0x0112, 3, 1, 6), (0x8769, 4, 1, 8), (0x8825, 4, 1, 8)], next_ifd=8)
    # offsets far past the end of the segment, and a count that would allocate 32 GB of rationals
    wild = _ifd([(0x010F, 2, 0x7FFFFFFF, 0x7FFF0000), (0x8769, 4, 1, 0x0FFFFFF0), (0x9003, 5, 0xFFFFFFF, 20)], 0xFFFF)
    rng = random.Random(3)
    garbage = bytes(rng.randrange(256) for _ in range(600))
    cases = []
    for name, payload in (
        ("self_referencing", b"Exif\x00\x00" + tiff_header + loop),
        ("wild_offsets", b"Exif\x00\x00" + tiff_header + wild),
        ("garbage", b"Exif\x00\x00" + garbage),
        ("header_only", b"Exif\x00\x00II*\x00"),
    ):
        _write(folder, f"exif/{name}.jpg", _with_app1(jpeg, payload))
        cases.append(Case(f"exif/{name}.jpg", "image"))
    return cases


# ---- unusual but valid pixels ---------------------------------------------------------------------------


def write_modes(folder: Path) -> list[Case]:
    """CMYK JPEG and TIFF, 16-bit grey and RGB PNG, 16-bit RGB TIFF, palette images with transparency."""
    im = _photo(4)
    files = {
        "modes/cmyk.jpg": _encode(im.convert("CMYK"), "JPEG", quality=90),
        "modes/cmyk.tif": _encode(im.convert("CMYK"), "TIFF"),
        "modes/grey16.png": _encode(
            Image.fromarray((np.asarray(im.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)), "PNG"
        ),
        "modes/palette_transparent.png": _encode(_transparent_palette(im), "PNG"),
        "modes/palette_transparent.gif": _encode(_transparent_palette(im), "GIF"),
        "modes/rgba.webp": _encode(im.convert("RGBA"), "WEBP"),
    }
    rgb16 = (np.asarray(im, dtype=np.uint16) * 257).astype(">u2")
    files["modes/rgb16.png"] = _png_rgb16(rgb16)
    try:
        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, rgb16.astype(np.uint16), photometric="rgb")
        files["modes/rgb16.tif"] = buf.getvalue()
    except ImportError:
        pass
    for name, data in files.items():
        _write(folder, name, data)
    return [Case(name, "image") for name in files]


def _transparent_palette(im: Image.Image) -> Image.Image:
    pal = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    return pal


def _png_rgb16(rgb16: np.ndarray) -> bytes:
    """A 48-bit RGB PNG, written by hand (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def write_animated_gif_with_broken_frame(folder: Path) -> list[Case]:
    """Three frames; the last one's pixel data is cut short and its trailer is missing."""
    frames = [_photo(10 + i, 120, 90) for i in range(3)]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    last = data.rindex(b"\x2c")  # the last image descriptor
    _write(folder, "gif/broken_frame.gif", data[: last + (len(data) - last) // 2])
    return [Case("gif/broken_frame.gif", "image")]


def write_png_text_bomb(folder: Path) -> list[Case]:
    """A small PNG with a zTXt chunk that inflates to 64 MB of text (Pillow stops at 1 MB)."""
    base = _encode(_photo(5, 64, 48), "PNG")
    comp = zlib.compressobj(9)
    chunk = b"\x00" * (1 << 20)
    body = b"".join(comp.compress(chunk) for _ in range(64)) + comp.flush()
    ztxt = png_chunk(b"zTXt", b"Comment\x00\x00" + body)
    end = base.index(b"IDAT") - 4
    _write(folder, "bombs/text_bomb.png", base[:end] + ztxt + base[end:])
    return [Case("bombs/text_bomb.png", "failure", "too large")]


# ---- names ---------------------------------------------------------------------------------------------

ODD_NAMES = {
    "spaces": "names/with  spaces .jpg",
    "newline": "names/new\nline.jpg",
    "tab_and_cr": "names/tab\tand\rcarriage.jpg",
    "emoji": "names/🎉 party 🐈‍⬛.jpg",
    "rtl": "names/\u202etxt.jpg",  # a right-to-left override: the name displays backwards
    "latin1": os.fsdecode(b"names/caf\xe9.jpg"),  # invalid UTF-8: a Latin-1 name from an old camera or zip
    "bad_folder": os.fsdecode(b"names/\xff\xfe folder/inside.jpg"),
}


def write_odd_names(folder: Path) -> list[Case]:
    """The same photo under names with spaces, control characters, emoji and bytes that are not UTF-8;
    one copy with a plain name too, so the odd ones form an exact group with it."""
    data = _encode(_photo(6), "JPEG", quality=90)
    _write(folder, "names/plain.jpg", data)
    for name in ODD_NAMES.values():
        _write(folder, name, data)
    return [Case("names/plain.jpg", "image")] + [Case(name, "image") for name in ODD_NAMES.values()]


# ---- the file system -----------------------------------------------------------------------------------


def write_links_and_specials(folder: Path) -> list[Case]:
    """A link to its own folder, a link to itself, a dangling link, a named pipe named like a photo."""
    base = os.path.join(os.fspath(folder), "links")
    os.makedirs(base, exist_ok=True)
    _write(folder, "links/real.jpg", _encode(_photo(8), "JPEG"))
    os.symlink(".", os.path.join(base, "loop"))
    os.symlink("self.jpg", os.path.join(base, "self.jpg"))
    os.symlink("nowhere.jpg", os.path.join(base, "dangling.jpg"))
    os.mkfifo(os.path.join(base, "pipe.jpg"))
    return [
        Case("links/real.jpg", "image"),
        Case("links/loop", "absent"),
        Case("links/self.jpg", "absent"),
        Case("links/dangling.jpg", "absent"),
        Case("links/pipe.jpg", "absent"),
    ]


def write_many_tiny_files(folder: Path, count: int = MANY_FILES, images: int = MANY_IMAGES) -> list[Case]:
    """`count` tiny files in one folder: `images` of them 8x8 PNGs (all different), spread evenly, the
    rest a few bytes of text (cases too, "other")."""
    rng = np.random.default_rng(11)
    picked = set(np.linspace(0, count - 1, images, dtype=int).tolist()) if images else set()
    cases = []
    for i in range(count):
        if i in picked:
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            cases.append(Case(f"many/f{i:05d}.png", "image"))
            _write(folder, cases[-1].name, _encode(Image.fromarray(pixels, "RGB"), "PNG"))
        else:
            cases.append(Case(f"many/f{i:05d}.txt", "other"))
            _write(folder, cases[-1].name, b"%d\n" % i)
    return cases


WRITERS: tuple[Callable[[Path], list[Case]], ...] = (
    write_truncated,
    write_garbled_tiff,
    write_empty,
    write_random_bytes,
    write_bombs,
    write_broken_exif,
    write_modes,
    write_animated_gif_with_broken_frame,
    write_png_text_bomb,
    write_odd_names,
    write_links_and_specials,
)


def write_corpus(folder: Path, many_images: int | None = MANY_IMAGES) -> list[Case]:
    """Every hostile file in one folder, and the folder of 10,000 tiny files with `many_images` images
    among them (None: without that folder)."""
    cases = [case for writer in WRITERS for case in writer(folder)]
    if many_images is not None:
        cases += write_many_tiny_files(folder, MANY_FILES, many_images)
    return cases
