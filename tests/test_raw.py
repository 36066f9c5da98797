"""Camera RAW: generated DNGs through the real LibRaw; other RAW containers through a stand-in rawpy.

LibRaw opens the DNGs tests/rawgen.py writes (a Bayer mosaic, optional previews, Exif and GPS IFDs).
CR3, RAF, NEF... cannot be generated here, so their container handling (metadata from CR3 boxes or
the embedded preview) is exercised with a fake rawpy module that serves a preview.
"""

import io
import sys
import types

import numpy as np
import pytest
from conftest import photo
from PIL import Image
from rawgen import ASCII, LONG, SHORT, dng_bytes, tiff_bytes

from ndup import raw
from ndup.decode import MODEL_SIDE, analyze
from ndup.records import Decoded, Failure

rawpy = pytest.importorskip("rawpy")


def model_view(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((MODEL_SIDE, MODEL_SIDE), Image.BILINEAR), dtype=np.float32)


def diff(out, im: Image.Image) -> float:
    return float(np.abs(out.pixels.astype(np.float32) - model_view(im)).mean())


@pytest.fixture
def no_develop(monkeypatch):
    def refuse(self):
        raise AssertionError("the embedded preview should have been used")

    monkeypatch.setattr(raw.RawFile, "develop", refuse)


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("preview", ["jpeg", "bitmap"])
def test_dng_uses_its_embedded_preview_and_reports_the_raw_size(tmp_path, preview, no_develop):
    sensor = photo(40, 640, 480)
    out = analyze(write(tmp_path / "IMG_1.DNG", dng_bytes(sensor, preview=preview, preview_side=512)))
    f = out.facts
    assert (f.format, f.subtype, f.width, f.height, f.lossless) == ("RAW", "DNG", 640, 480, True)
    assert (f.camera, f.lens, f.capture_time, f.has_gps) == (
        "Ndup TestCam 1",
        "Ndup 35mm F2",
        "2023-07-14T10:22:05",
        False,
    )
    assert diff(out, sensor) < 6


def test_dng_orientation_gps_and_subseconds(tmp_path, no_develop):
    shown = photo(41, 640, 480)
    sensor = shown.transpose(Image.Transpose.ROTATE_90)  # held upright: the sensor saw it sideways
    data = dng_bytes(sensor, orientation=6, gps=(48.85, 2.35), subsec="35", offset="+02:00")
    out = analyze(write(tmp_path / "turned.dng", data))
    f = out.facts
    assert (f.width, f.height) == (640, 480)
    assert f.capture_time == "2023-07-14T10:22:05.35+02:00" and f.has_gps
    assert diff(out, shown) < 6


@pytest.mark.parametrize("kw", [{"preview": None}, {"preview": "jpeg", "preview_side": 160}])
def test_dng_without_a_usable_preview_is_developed(tmp_path, monkeypatch, kw):
    sensor = photo(42, 640, 480)
    calls = []
    real = raw.RawFile.develop
    monkeypatch.setattr(raw.RawFile, "develop", lambda self: calls.append(1) or real(self))
    out = analyze(write(tmp_path / "a.dng", dng_bytes(sensor, **kw)))
    assert calls and isinstance(out, Decoded)
    assert (out.facts.width, out.facts.height, out.facts.camera) == (640, 480, "Ndup TestCam 1")
    assert diff(out, sensor) < 20  # LibRaw's own rendering: white balance and tone curve differ a little


def test_plain_tiff_with_a_raw_name_is_read_as_tiff(tmp_path):
    p = tmp_path / "scan.nef"
    photo(43, 320, 240).save(p, "TIFF")
    out = analyze(str(p))
    assert out.facts.format == "TIFF" and out.facts.subtype is None


def test_damaged_or_unknown_raws_are_failures(tmp_path):
    cr3 = write(tmp_path / "x.cr3", b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + b"\x00" * 200)
    assert "CR3 RAW file that LibRaw cannot read" in analyze(cr3).reason
    cut = write(tmp_path / "cut.dng", dng_bytes(photo(44, 320, 240))[:3000])
    assert isinstance(analyze(cut), Failure)


def test_missing_rawpy_is_a_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy -> ImportError
    out = analyze(write(tmp_path / "a.dng", dng_bytes(photo(45, 320, 240))))
    assert isinstance(out, Failure) and "rawpy package is not installed" in out.reason


# ---- containers LibRaw needs real camera files for: a stand-in rawpy ---------------------------------
class _Err(Exception):
    pass


def fake_rawpy(preview: bytes, size=(6000, 4000), flip=0):
    """A rawpy module whose imread opens anything and serves `preview` as the embedded JPEG."""

    class Raw:
        sizes = types.SimpleNamespace(width=size[0], height=size[1], flip=flip)
        other = types.SimpleNamespace(timestamp=None)
        lens = types.SimpleNamespace(model="")

        def extract_thumb(self):
            return types.SimpleNamespace(format=mod.ThumbFormat.JPEG, data=preview)

        def postprocess(self, **kw):
            raise AssertionError("not developed")

        def close(self):
            pass

    mod = types.ModuleType("rawpy")
    mod.imread = lambda f: Raw()
    mod.ThumbFormat = types.SimpleNamespace(JPEG=1, BITMAP=2)
    for name in ("LibRawError", "LibRawFileUnsupportedError", "LibRawNoThumbnailError",
                 "LibRawUnsupportedThumbnailError"):  # fmt: skip
        setattr(mod, name, type(name, (_Err,), {}))
    return mod


def jpeg(im: Image.Image, exif: bytes = b"") -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def test_raf_metadata_comes_from_its_preview(tmp_path, monkeypatch):
    from imagegen import camera_exif

    shown = photo(46, 600, 400)
    exif = camera_exif(make="FUJIFILM", model="X-T4", subsec="50", lens="XF23mmF1.4 R")
    monkeypatch.setitem(sys.modules, "rawpy", fake_rawpy(jpeg(shown, exif.tobytes())))
    out = analyze(write(tmp_path / "DSCF0001.RAF", b"FUJIFILMCCD-RAW 0201FF383501" + b"\x00" * 100))
    f = out.facts
    assert (f.format, f.subtype, f.width, f.height) == ("RAW", "RAF", 6000, 4000)
    assert (f.camera, f.lens, f.capture_time) == ("FUJIFILM X-T4", "XF23mmF1.4 R", "2023-07-14T10:22:05.50")
    assert diff(out, shown) < 6


def _box(kind: bytes, payload: bytes) -> bytes:
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload


def test_cr3_metadata_comes_from_its_cmt_boxes(tmp_path, monkeypatch):
    shown = photo(47, 600, 400)
    monkeypatch.setitem(sys.modules, "rawpy", fake_rawpy(jpeg(shown), size=(6000, 4000), flip=6))
    cmt1 = tiff_bytes([[(271, ASCII, "Canon"), (272, ASCII, "Canon EOS R5"), (274, SHORT, [1])]], [])
    cmt2 = tiff_bytes([[(36867, ASCII, "2024:01:02 03:04:05"), (37521, ASCII, "12"), (42036, ASCII, "RF50mm")]], [])
    cmt4 = tiff_bytes([[(1, ASCII, "N"), (2, LONG, [1, 1, 1])]], [])  # no longitude: no position
    moov = _box(b"moov", _box(b"uuid", b"\x85\xc0\xb6\x87" + b"\x00" * 12 + _box(b"CMT1", cmt1)
                              + _box(b"CMT2", cmt2) + _box(b"CMT4", cmt4)))  # fmt: skip
    data = _box(b"ftyp", b"crx \x00\x00\x00\x01crx isom") + moov + b"\x00" * 64
    f = analyze(write(tmp_path / "IMG_0001.CR3", data)).facts
    assert (f.format, f.subtype, f.width, f.height) == ("RAW", "CR3", 4000, 6000)  # flip 6: portrait
    assert (f.camera, f.lens, f.capture_time, f.has_gps) == ("Canon EOS R5", "RF50mm", "2024-01-02T03:04:05.12", False)


def test_orf_and_rw2_magic_numbers_are_read_as_tiff_for_exif():
    tiff = tiff_bytes([[(271, ASCII, "OLYMPUS"), (272, ASCII, "E-M1")]], [])
    for magic in (b"IIRO", b"IIU\x00"):
        blobs = raw.exif_blobs(magic + tiff[4:], "ORF")
        assert blobs["tiff"][:4] == b"II*\x00"
    assert raw.exif_blobs(b"FUJIFILMCCD-RAW", "RAF") == {}
