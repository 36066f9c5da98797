"""Files -> facts and model-ready pixels. The only module that talks to Pillow and imagehash.

`analyze` runs in worker processes: it takes a path, returns plain picklable records and never
raises for a bad file (the reason goes into a Failure instead).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import os
import re
import stat
import warnings
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from ndup.formats import IMAGE_EXTENSIONS, SNIFF_BYTES, raw_subtype, sniff
from ndup.raw import NotRaw, RawFile, RawUnavailable, exif_blobs
from ndup.records import Decoded, Failure, ImageFacts, NotAnImage

# Bumped whenever decoding changes what it produces: cached facts of an older version are recomputed.
DECODE_VERSION = 2  # 2: HEIF/AVIF/RAW, capture metadata, sharpness and exposure
# The square RGB image handed to the model; the model resamples it to its own input size.
MODEL_SIDE = 256
# The long side pictures are compared at by registration (ndup.registration, which reads it from here).
REGISTRATION_SIDE = 480
# Image files are read whole into memory: a bigger one (a disk image that starts like a JPEG, a huge scan)
# is a failure, not a worker's memory. Pillow refuses images over ~179 megapixels anyway, which
# uncompressed at 8 bits per channel is ~0.5 GiB.
MAX_FILE_BYTES = 1 << 30
# Alpha is flattened onto white, as photo tools do when they export a transparent image to JPEG.
BACKGROUND = (255, 255, 255)

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


# ---- metadata -------------------------------------------------------------------------------------
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_MAKE, _MODEL, _RATING = 0x010F, 0x0110, 0x4746
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x9003, 0x9004
_SUBSEC_ORIGINAL, _SUBSEC_DIGITIZED = 0x9291, 0x9292
_OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9011, 0x9012
_LENS_MODEL = 0xA434
_GPS_LATITUDE, _GPS_LONGITUDE = 2, 4
_EXIF_DATE = re.compile(r"\s*(\d{4})[:-](\d\d)[:-](\d\d)[ T](\d\d):(\d\d):(\d\d)")
_EXIF_OFFSET = re.compile(r"\s*([+-])(\d\d):?(\d\d)")
_XMP_RATING = re.compile(rb"xmp:Rating(?:\s*=\s*[\"']|>)\s*(-?\d+)")


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ").strip()
    return value or None


def exif_capture_time(date: object, subsec: object = None, offset: object = None) -> str | None:
    """EXIF's "2023:07:14 10:22:05" (+ "120", "+02:00") -> "2023-07-14T10:22:05.120+02:00"; None if unusable."""
    m = _EXIF_DATE.match(_text(date) or "")
    if not m:
        return None
    y, mo, d, h, mi, sec = map(int, m.groups())
    try:
        datetime.datetime(y, mo, d, h, mi, sec)
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders
        return None
    out = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{sec:02d}"
    digits = "".join(ch for ch in (_text(subsec) or "") if ch.isdigit())[:6]
    if digits:
        out += "." + digits
    om = _EXIF_OFFSET.match(_text(offset) or "")
    if om and int(om.group(2)) <= 14 and int(om.group(3)) < 60:
        out += f"{om.group(1)}{om.group(2)}:{om.group(3)}"
    return out


def _xmp_rating(xmp: object) -> int | None:
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    m = _XMP_RATING.search(xmp) if isinstance(xmp, bytes) else None
    return max(-1, min(int(m.group(1)), 5)) if m else None


class _Exif:
    """The three EXIF directories ndup reads, as plain mappings (any of them may be empty)."""

    def __init__(self, ifd0=None, exif=None, gps=None):
        self.ifd0, self.exif, self.gps = ifd0 or {}, exif or {}, gps or {}

    @classmethod
    def of(cls, exif: Image.Exif | None) -> _Exif:
        if exif is None:
            return cls()
        sub = {}
        for ifd in (_EXIF_IFD, _GPS_IFD):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Corrupt EXIF data": common, and never the user's problem
                    sub[ifd] = exif.get_ifd(ifd)
            except Exception:  # a broken pointer to a sub-directory loses that directory only
                sub[ifd] = {}
        return cls(exif, sub[_EXIF_IFD], sub[_GPS_IFD])

    @classmethod
    def of_raw(cls, data: bytes, subtype: str) -> _Exif:
        blobs = exif_blobs(data, subtype)
        if "tiff" in blobs:
            return cls.of(_load_exif(blobs["tiff"]))
        return cls(*(_load_exif(blobs[k]) if k in blobs else None for k in ("ifd0", "exif", "gps")))

    def __bool__(self) -> bool:
        return bool(self.ifd0 or self.exif or self.gps)

    @property
    def tag_count(self) -> int:
        return len(self.ifd0) + len(self.exif) + len(self.gps)

    @property
    def orientation(self) -> int:
        try:
            return int(self.ifd0.get(_EXIF_ORIENTATION, 1) or 1)
        except (TypeError, ValueError):
            return 1

    def facts(self, xmp: object = None) -> dict:
        """The capture metadata ImageFacts keeps; unknown values are None."""
        e, i0 = self.exif, self.ifd0
        when = exif_capture_time(
            e.get(_DATETIME_ORIGINAL), e.get(_SUBSEC_ORIGINAL), e.get(_OFFSET_ORIGINAL)
        ) or exif_capture_time(e.get(_DATETIME_DIGITIZED), e.get(_SUBSEC_DIGITIZED), e.get(_OFFSET_DIGITIZED))
        rating = i0.get(_RATING)
        return dict(
            capture_time=when,
            camera_make=_text(i0.get(_MAKE)),
            camera_model=_text(i0.get(_MODEL)),
            lens=_text(e.get(_LENS_MODEL)),
            has_gps=bool(self.gps.get(_GPS_LATITUDE) and self.gps.get(_GPS_LONGITUDE)),
            rating=max(-1, min(int(rating), 5)) if isinstance(rating, int) else _xmp_rating(xmp),
        )


def _load_exif(blob: bytes) -> Image.Exif | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = Image.Exif()
            exif.load(blob)
        return exif
    except Exception:
        return None


def _image_exif(im: Image.Image) -> _Exif:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = im.getexif()
        return _Exif.of(exif)
    except Exception:  # broken EXIF is common and never a reason to drop a photo
        return _Exif()


def _xmp_of(im: Image.Image) -> object:
    return im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")


# ---- pixels ---------------------------------------------------------------------------------------
# The sharpness and exposure measures are taken on the grey image at this size (short side), so they
# compare across files of different resolutions.
MEASURE_SIDE = 256
# An embedded RAW preview smaller than this (long side) is a thumbnail: the RAW data is developed instead.
MIN_RAW_PREVIEW = 256


def measure(rgb: Image.Image) -> tuple[float, float]:
    """(sharpness, clipped) of a picture, for picking the best of a burst.

    sharpness: the variance of the Laplacian of the grey image (blur lowers it; so does a darker frame);
    clipped: the fraction of pixels blown out or crushed to black (over- or underexposure).
    """
    grey = rgb.convert("L")
    scale = MEASURE_SIDE / min(grey.size)
    if scale < 1:
        grey = grey.resize(
            (max(1, round(grey.width * scale)), max(1, round(grey.height * scale))), Image.BILINEAR, reducing_gap=2.0
        )
    g = np.asarray(grey, dtype=np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    sharpness = float(lap.var()) if lap.size else 0.0
    clipped = float(((g <= 2) | (g >= 253)).mean()) if g.size else 0.0
    return round(sharpness, 2), round(clipped, 4)


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    if orientation == 1:
        return im
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)  # fmt: skip
    return im.transpose(method) if method is not None else im


@functools.cache
def _register_plugins(container: str) -> str | None:
    """Make Pillow able to open HEIF (pillow-heif) and AVIF; a reason when it cannot."""
    if container == "HEIF":
        try:
            import pillow_heif
        except ImportError:
            return "a HEIF/HEIC image, but the pillow-heif package is not installed (pip install pillow-heif)"
        pillow_heif.register_heif_opener()
    elif container == "AVIF":
        from PIL import features

        if not features.check("avif"):
            try:
                import pillow_heif

                pillow_heif.register_avif_opener()  # pillow-heif before 1.0 decodes AVIF
            except (ImportError, AttributeError):
                return "an AVIF image, but this Pillow has no AVIF support (pip install -U pillow)"
    return None


class _Unreadable(Exception):
    """A file ndup recognises but cannot decode here; the message is the reason shown to the user."""


@dataclass
class _Picture:
    """A file opened as a person sees it, with what the facts need to know about it."""

    rgb: Image.Image  # upright, 8-bit RGB, possibly reduced (JPEG draft) but never below the asked side
    format: str
    width: int  # full size as displayed (after orientation)
    height: int
    exif: _Exif
    xmp: object = None
    quality: int | None = None
    lossless: bool = False
    subtype: str | None = None
    capture_time: str | None = None  # a fallback for files without EXIF capture time (RAW via LibRaw)
    lens: str | None = None
    drafted: tuple[int, int] | None = None  # the stored size a JPEG was decoded at (before orientation)


def _draft(im: Image.Image, side: int, long_side: bool) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale: the main cost saving for camera photos. At no less
    than `side` px on both sides, or with `long_side`, on the longer side only."""
    stored = max(im.size)
    im.draft("RGB", (side * im.width // stored, side * im.height // stored) if long_side else (side, side))


def _open_pillow(data: bytes, side: int, decoded: Image.Image | None = None, long_side: bool = False) -> _Picture:
    """`decoded`: the pixels, already decoded and turned upright elsewhere (a JPEG decoded on the GPU);
    then the file is only parsed for its facts. A JPEG is decoded at no less than `side` px on both
    sides, or with `long_side`, on its longer side only (a 4000x3000 photo for 480 px: 500x375)."""
    im = Image.open(BytesIO(data))  # multi-page and animated files open on their first frame
    fmt = im.format or "unknown"
    width, height = im.size
    quality = estimate_jpeg_quality(getattr(im, "quantization", None)) if fmt in ("JPEG", "MPO") else None
    exif = _image_exif(im)
    xmp = _xmp_of(im)
    orientation = exif.orientation
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if decoded is not None:
        return _Picture(decoded, fmt, width, height, exif, xmp, quality, False)
    drafted = None
    if fmt in ("JPEG", "MPO"):
        _draft(im, side, long_side)
        drafted = im.size
    im.load()
    if orientation != 1:
        with contextlib.suppress(Exception):  # a broken orientation tag: keep the pixels as stored
            im = ImageOps.exif_transpose(im)
    lossless = fmt in LOSSLESS_FORMATS or bool(im.info.get("lossless"))
    return _Picture(to_rgb(im), fmt, width, height, exif, xmp, quality, lossless, drafted=drafted)


def _open_raw(data: bytes, subtype: str, side: int) -> _Picture:
    try:
        raw_file = RawFile(data)
    except RawUnavailable:
        raise _Unreadable("a camera RAW file, but the rawpy package is not installed (pip install rawpy)") from None
    with raw_file as raw:
        width, height = raw.size
        orientation = raw.orientation
        preview, im = raw.preview(), None
        preview_exif = _Exif()
        if isinstance(preview, bytes):
            try:
                im = Image.open(BytesIO(preview))
                preview_exif = _image_exif(im)
                if max(im.size) >= MIN_RAW_PREVIEW:
                    im.draft("RGB", (side, side))
                    im.load()
            except Exception:  # a damaged preview: develop the RAW data instead
                im = None
        elif preview is not None:
            im = Image.fromarray(preview, "RGB")
        if im is None or max(im.size) < MIN_RAW_PREVIEW:
            im, turn = Image.fromarray(raw.develop(), "RGB"), 1  # LibRaw turns what it develops
        else:
            # Previews are stored as the sensor saw them; the RAW's orientation turns them upright,
            # unless the preview carries its own orientation tag.
            turn = preview_exif.orientation if preview_exif.orientation != 1 else orientation
        when = raw.capture_time
        lens = raw.lens
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    exif = _Exif.of_raw(data, subtype) or preview_exif
    return _Picture(
        rgb=to_rgb(_orient(im, turn)),
        format="RAW",
        width=width,
        height=height,
        exif=exif,
        lossless=True,
        subtype=subtype,
        capture_time=when.isoformat(timespec="seconds") if when else None,
        lens=lens,
    )


def _open(data: bytes, container: str, path: str, side: int, long_side: bool = False) -> _Picture:
    """Any supported file -> an upright RGB picture; RAW through LibRaw, everything else through Pillow."""
    subtype = raw_subtype(container, path)
    if subtype:
        try:
            return _open_raw(data, subtype, side)
        except NotRaw:
            if container != "TIFF":
                raise _Unreadable(
                    f"a {subtype} RAW file that LibRaw cannot read (unsupported camera or damaged)"
                ) from None
            # a plain TIFF with a RAW's name: Pillow reads it below
    missing = _register_plugins(container)
    if missing:
        raise _Unreadable(missing)
    return _open_pillow(data, side, long_side=long_side)


@contextlib.contextmanager
def _quiet_decoding():
    with warnings.catch_warnings():
        # Images between Pillow's warning and error limits are decoded; above it DecompressionBombError.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # "Corrupt EXIF data" and the like: a damaged file is reported as a Failure, never as stderr noise.
        warnings.simplefilter("ignore", UserWarning)
        yield


def _decode_image(
    data: bytes, content_hash: str, container: str, path: str, decoded: Image.Image | None = None, view: bool = False
) -> tuple[ImageFacts, np.ndarray, np.ndarray | None]:
    """The facts, the model's pixels and, with `view`, the registration picture (registration_grey)
    when it is the one a file read again would give; else None."""
    import imagehash

    with _quiet_decoding():
        pic = _open(data, container, path, MODEL_SIDE) if decoded is None else _open_pillow(data, MODEL_SIDE, decoded)
        meta = pic.exif.facts(pic.xmp)  # EXIF values are decoded (and complained about) when read
    rgb = pic.rgb
    meta["capture_time"] = meta["capture_time"] or pic.capture_time
    meta["lens"] = meta["lens"] or pic.lens
    sharpness, clipped = measure(rgb)
    facts = ImageFacts(
        content_hash=content_hash,
        format=pic.format,
        width=pic.width,
        height=pic.height,
        phash=_hash_hex(imagehash.phash(rgb)),
        dhash=_hash_hex(imagehash.dhash(rgb)),
        quality=pic.quality,
        lossless=pic.lossless,
        exif_tags=pic.exif.tag_count,
        subtype=pic.subtype,
        sharpness=sharpness,
        clipped=clipped,
        **meta,
    )
    pixels = np.asarray(rgb.resize((MODEL_SIDE, MODEL_SIDE), Image.BILINEAR, reducing_gap=2.0))
    grey = None
    if view and decoded is None:
        with _quiet_decoding(), contextlib.suppress(Exception):  # it only saves a re-read: never a failure
            grey = registration_grey(rgb) if _read_again_alike(data, pic) else None
    return facts, pixels, grey


def registration_grey(rgb: Image.Image) -> np.ndarray:
    """An upright picture as registration compares it: greyscale, no more than REGISTRATION_SIDE px on
    its long side. The one recipe for a file read again and for a scan's own decode of it."""
    im = rgb.copy() if max(rgb.size) > REGISTRATION_SIDE else rgb
    im.thumbnail((REGISTRATION_SIDE, REGISTRATION_SIDE))
    return np.asarray(im.convert("L"))


def _read_again_alike(data: bytes, pic: _Picture) -> bool:
    """Whether the file, read again for registration (`load_oriented` at REGISTRATION_SIDE), decodes
    to these same pixels: Pillow decodes other formats whole either way; a JPEG, when both requests
    draft it to the same scale (4000x3000 at 1/8 for both, 900x900 at 1/2 for the model's 256 px on
    both sides but whole for 480 px on the long one). RAW files choose a preview by size: never."""
    if pic.format == "RAW":
        return False
    if pic.drafted is None:
        return True
    again = Image.open(BytesIO(data))
    _draft(again, REGISTRATION_SIDE, long_side=True)
    return again.size == pic.drafted


_BOMB = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


def _truncated(data: bytes, container: str) -> bool:
    """Whether the file is shorter than its own header says (decoders that do not say "truncated")."""
    if container == "WEBP" and len(data) >= 8:
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    return False


def describe_error(e: BaseException, data: bytes = b"", container: str = "") -> str:
    """A short, human reason for a decode failure."""
    if isinstance(e, Image.DecompressionBombError):
        m = _BOMB.search(str(e))
        size = f"{int(m.group(1)):,} pixels; the limit is {int(m.group(2)):,}" if m else str(e)
        return f"image too large to decode safely ({size}); if you trust this file, it needs a manual check"
    if "Decompressed data too large" in str(e):  # a zip bomb in a PNG text or ICC chunk
        return "image too large to decode safely (a compressed metadata chunk expands past the safety limit)"
    if _truncated(data, container):
        return "truncated image: the file ends before the image data does"
    if isinstance(e, Image.UnidentifiedImageError):
        return "not a readable image: the format is not supported or the data is corrupt"
    if isinstance(e, _Unreadable):
        return str(e)
    if isinstance(e, MemoryError):
        return "not enough memory to decode this image"
    text = str(e) or type(e).__name__
    if "truncated" in text:
        return "truncated image: the file ends before the image data does"
    return f"corrupt image data ({text})"


def _too_big(path: str, size: int) -> Failure:
    limit = f"{MAX_FILE_BYTES / 2**30:g} GiB"
    return Failure(path, f"file too large to read safely ({size / 2**30:.1f} GiB; the limit is {limit})")


@dataclass(frozen=True, slots=True)
class Deferred:
    """A JPEG read and hashed by a worker whose pixels are decoded elsewhere (on the GPU, in batches):
    `finish` turns it into a Decoded once they are."""

    path: str
    size: int
    mtime_ns: int
    data: bytes
    content_hash: str
    orientation: int  # EXIF orientation, for the decoder to apply

    def finish(self, rgb: np.ndarray) -> Decoded | Failure:
        """`rgb`: the upright picture (H, W, 3) uint8, at least MODEL_SIDE on its short side."""
        try:
            facts, pixels, _ = _decode_image(self.data, self.content_hash, "JPEG", self.path, Image.fromarray(rgb))
        except Exception as e:
            return Failure(self.path, describe_error(e, self.data, "JPEG"))
        return Decoded(path=self.path, size=self.size, mtime_ns=self.mtime_ns, facts=facts, pixels=pixels)


def _deferrable(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG a GPU decoder can take (YCbCr or grey, within Pillow's size
    limits); None for anything else, which is decoded here as usual."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(BytesIO(data))
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return None
            return _image_exif(im).orientation
    except Exception:  # whatever is wrong with it, the CPU path says so with its reason
        return None


def analyze(path: str, defer_jpeg: bool = False, keep_view: bool = False) -> Decoded | Deferred | NotAnImage | Failure:
    """Read a file once: sniff, hash, decode. Never raises for anything wrong with the file.

    `defer_jpeg`: a plain JPEG is read and hashed but not decoded (a Deferred), for the GPU.
    `keep_view`: the Decoded carries its registration picture too, where it can (`_read_again_alike`)."""
    try:
        # Non-blocking, then checked: a file swapped for a named pipe or a device since the walk saw it
        # must not hang the scan or be read forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return Failure(path, "not a regular file any more (replaced since the scan found it)")
            head = f.read(SNIFF_BYTES)
            fmt = sniff(head)
            if fmt is None:
                ext = os.path.splitext(path)[1].lower()
                if ext not in IMAGE_EXTENSIONS:
                    return NotAnImage(path, st.st_size, st.st_mtime_ns)
                if st.st_size == 0:
                    return Failure(path, "empty file (0 bytes)")
                return Failure(path, f"not an image: the contents are not any image format, despite the {ext} name")
            # The file is read whole (hash, EXIF, RAW), so its size is bounded, also while it grows.
            if st.st_size > MAX_FILE_BYTES:
                return _too_big(path, st.st_size)
            data = head + f.read(MAX_FILE_BYTES + 1 - len(head))
            if len(data) > MAX_FILE_BYTES:
                return _too_big(path, len(data))
    except FileNotFoundError:
        return Failure(path, "the file disappeared during the scan")
    except PermissionError:
        return Failure(path, "permission denied: ndup cannot read this file")
    except OSError as e:
        return Failure(path, f"cannot read: {e.strerror or e}")
    if defer_jpeg and fmt == "JPEG" and (orientation := _deferrable(data)) is not None:
        return Deferred(path, st.st_size, st.st_mtime_ns, data, hashlib.sha256(data).hexdigest(), orientation)
    try:
        facts, pixels, grey = _decode_image(data, hashlib.sha256(data).hexdigest(), fmt, path, view=keep_view)
    except Exception as e:  # every decoder failure is a per-file fact, never a crashed scan
        return Failure(path, describe_error(e, data, fmt))
    return Decoded(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, facts=facts, pixels=pixels, grey=grey)


def load_rgb_array(path: str, max_side: int) -> np.ndarray:
    """An EXIF-oriented RGB image no larger than max_side, as a (H, W, 3) uint8 array (for training)."""
    return np.asarray(load_oriented(path, max_side))


def perceptual_hashes(rgb: np.ndarray) -> tuple[str, str]:
    """pHash and dHash of an RGB uint8 array, exactly as a scan computes them for files."""
    import imagehash

    im = Image.fromarray(rgb)
    return _hash_hex(imagehash.phash(im)), _hash_hex(imagehash.dhash(im))


def load_oriented(path: str, max_side: int | None = None) -> Image.Image:
    """An image as a person sees it (upright RGB), for thumbnails and explanations; any supported format."""
    with open(path, "rb") as f:
        data = f.read()
    with _quiet_decoding():
        rgb = _open(data, sniff(data[:SNIFF_BYTES]) or "", path, max_side or 1 << 30, long_side=True).rgb
    if max_side:
        rgb.thumbnail((max_side, max_side))
    return rgb


def save_contact_sheet(
    rows: list[list[np.ndarray]], path, captions: list[list[str]] | None = None, height: int = 224
) -> None:
    """Images (RGB uint8 arrays) in rows, scaled to one height, captioned, written as a PNG."""
    from PIL import ImageDraw

    scaled = [
        [Image.fromarray(a).resize((max(1, round(a.shape[1] * height / a.shape[0])), height)) for a in row]
        for row in rows
    ]
    gap, label = 8, 16
    width = max(sum(im.width for im in row) + gap * (len(row) + 1) for row in scaled)
    sheet = Image.new("RGB", (width, len(scaled) * (height + label + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = gap
    for r, row in enumerate(scaled):
        x = gap
        for c, im in enumerate(row):
            sheet.paste(im, (x, y + label))
            if captions:
                draw.text((x, y), captions[r][c], fill=(0, 0, 0))
            x += im.width + gap
        y += height + label + gap
    sheet.save(path, "PNG")
