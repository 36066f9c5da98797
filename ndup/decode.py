"""Files -> facts and model-ready pixels. The only module that talks to Pillow and imagehash.

`analyze` runs in worker processes: it takes a path, returns plain picklable records and never
raises for a bad file (the reason goes into a Failure instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from ndup.formats import SNIFF_BYTES, sniff
from ndup.records import Decoded, Failure, ImageFacts, NotAnImage

# Bumped whenever decoding changes what it produces: cached facts of an older version are recomputed.
DECODE_VERSION = 1
# The square RGB image handed to the model; the model resamples it to its own input size.
MODEL_SIDE = 256
# Alpha is flattened onto white, as photo tools do when they export a transparent image to JPEG.
BACKGROUND = (255, 255, 255)

IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".apng",
        ".gif",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".dib",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
        ".jp2",
        ".j2k",
        ".mpo",
        ".dng",
        ".cr2",
        ".cr3",
        ".nef",
        ".nrw",
        ".arw",
        ".srf",
        ".sr2",
        ".raf",
        ".orf",
        ".rw2",
        ".pef",
        ".srw",
        ".x3f",
    ]
)
LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP", "GIF"})
_EXIF_ORIENTATION = 0x0112

# IJG's standard luminance quantisation table (quality 50); JPEG quality is estimated against it.
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def estimate_jpeg_quality(quantization: dict | None) -> int | None:
    """The IJG quality (1-100) whose luminance table is closest in scale to the file's."""
    if not quantization or 0 not in quantization:
        return None
    table = list(quantization[0])
    if len(table) != 64:
        return None
    scale = 100.0 * sum(table) / sum(_IJG_LUMA)
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return round(min(max(quality, 1.0), 100.0))


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, with alpha flattened and high bit depths scaled (not clipped)."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = values.max(initial=0.0)
        if im.mode == "F":
            values = values / top * 255.0 if top > 0 else values
        elif top > 255.0:
            values = values / 257.0  # 16-bit samples
        im = Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def _hash_hex(h) -> str:
    return str(h).rjust(16, "0")


def _decode_image(data: bytes, content_hash: str) -> tuple[ImageFacts, np.ndarray]:
    import imagehash

    with warnings.catch_warnings():
        # Images between Pillow's warning and error limits are decoded; above it DecompressionBombError.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(BytesIO(data))
        fmt = im.format or "unknown"
        width, height = im.size
        quality = estimate_jpeg_quality(getattr(im, "quantization", None)) if fmt in ("JPEG", "MPO") else None
        try:
            exif = im.getexif()
            exif_tags = len(exif) + sum(len(exif.get_ifd(ifd)) for ifd in (0x8769, 0x8825))
            orientation = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
        except Exception:  # broken EXIF is common and never a reason to drop a photo
            exif_tags, orientation = 0, 1
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if fmt in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: the main cost saving for camera photos.
            im.draft("RGB", (MODEL_SIDE, MODEL_SIDE))
        im.load()
        if orientation != 1:
            with contextlib.suppress(Exception):  # a broken orientation tag: keep the pixels as stored
                im = ImageOps.exif_transpose(im)
        rgb = to_rgb(im)
    facts = ImageFacts(
        content_hash=content_hash,
        format=fmt,
        width=width,
        height=height,
        phash=_hash_hex(imagehash.phash(rgb)),
        dhash=_hash_hex(imagehash.dhash(rgb)),
        quality=quality,
        lossless=fmt in LOSSLESS_FORMATS or bool(im.info.get("lossless")),
        exif_tags=exif_tags,
    )
    pixels = np.asarray(rgb.resize((MODEL_SIDE, MODEL_SIDE), Image.BILINEAR, reducing_gap=2.0))
    return facts, pixels


def describe_error(e: BaseException) -> str:
    """A short, human reason for a decode failure."""
    if isinstance(e, Image.DecompressionBombError):
        return f"image too large to decode safely ({e}); if you trust this file, it needs a manual check"
    if isinstance(e, Image.UnidentifiedImageError):
        return "not a readable image: the format is not supported or the data is corrupt"
    if isinstance(e, MemoryError):
        return "not enough memory to decode this image"
    text = str(e) or type(e).__name__
    if "truncated" in text:
        return "truncated image: the file ends before the image data does"
    return f"corrupt image data ({text})"


def analyze(path: str) -> Decoded | NotAnImage | Failure:
    """Read a file once: sniff, hash, decode. Never raises for anything wrong with the file."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(SNIFF_BYTES)
            fmt = sniff(head)
            if fmt is None:
                ext = os.path.splitext(path)[1].lower()
                if ext not in IMAGE_EXTENSIONS:
                    return NotAnImage(path, st.st_size, st.st_mtime_ns)
                if st.st_size == 0:
                    return Failure(path, "empty file (0 bytes)")
                return Failure(path, f"not an image: the contents are not any image format, despite the {ext} name")
            data = head + f.read()
    except FileNotFoundError:
        return Failure(path, "the file disappeared during the scan")
    except PermissionError:
        return Failure(path, "permission denied: ndup cannot read this file")
    except OSError as e:
        return Failure(path, f"cannot read: {e.strerror or e}")
    try:
        facts, pixels = _decode_image(data, hashlib.sha256(data).hexdigest())
    except Exception as e:  # every decoder failure is a per-file fact, never a crashed scan
        return Failure(path, describe_error(e))
    return Decoded(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, facts=facts, pixels=pixels)


def load_rgb_array(path: str, max_side: int) -> np.ndarray:
    """An EXIF-oriented RGB image no larger than max_side, as a (H, W, 3) uint8 array (for training)."""
    return np.asarray(load_oriented(path, max_side))


def perceptual_hashes(rgb: np.ndarray) -> tuple[str, str]:
    """pHash and dHash of an RGB uint8 array, exactly as a scan computes them for files."""
    import imagehash

    im = Image.fromarray(rgb)
    return _hash_hex(imagehash.phash(im)), _hash_hex(imagehash.dhash(im))


def load_oriented(path: str, max_side: int | None = None) -> Image.Image:
    """An image as a person sees it (EXIF-oriented RGB), for thumbnails and explanations."""
    im = Image.open(path)
    if max_side and im.format in ("JPEG", "MPO"):
        im.draft("RGB", (max_side, max_side))
    im = ImageOps.exif_transpose(im)
    rgb = to_rgb(im)
    if max_side:
        rgb.thumbnail((max_side, max_side))
    return rgb
