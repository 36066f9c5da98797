"""Every format of a real photo library decodes to the picture a person sees, with its capture metadata."""

import io

import numpy as np
import pytest
from conftest import photo, save
from imagegen import camera_exif
from PIL import Image, ImageEnhance, ImageFilter

from ndup import decode
from ndup.decode import MODEL_SIDE, analyze, exif_capture_time, measure
from ndup.records import Decoded, Failure


def model_view(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((MODEL_SIDE, MODEL_SIDE), Image.BILINEAR), dtype=np.float32)


def looks_like(out, im: Image.Image, tolerance: float = 8.0) -> bool:
    return isinstance(out, Decoded) and float(np.abs(out.pixels.astype(np.float32) - model_view(im)).mean()) < tolerance


def test_heic_decodes_with_its_metadata_and_rotation(tmp_path, heif):
    shown = photo(30, 480, 320)
    exif = camera_exif(make="Apple", model="iPhone 13", subsec="120", offset="+02:00", lens="iPhone 13 back camera")
    p = save(shown, tmp_path / "IMG_0001.HEIC", "HEIF", quality=90, exif=exif.tobytes())
    out = analyze(str(p))
    f = out.facts
    assert (f.format, f.width, f.height) == ("HEIF", 480, 320)
    assert f.capture_time == "2023-07-14T10:22:05.120+02:00"
    assert (f.camera, f.lens) == ("Apple iPhone 13", "iPhone 13 back camera")
    assert looks_like(out, shown)
    # libheif applies the HEIF's own rotation; the EXIF tag must not turn it a second time
    turned = save(shown, tmp_path / "turned.heic", "HEIF", quality=90, exif=camera_exif(orientation=6).tobytes())
    t = analyze(str(turned))
    assert (t.facts.width, t.facts.height) == (320, 480)
    assert looks_like(t, shown.transpose(Image.Transpose.ROTATE_270))


def test_avif_decodes(tmp_path):
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    shown = photo(31, 320, 240)
    p = save(shown, tmp_path / "a.avif", "AVIF", quality=85, exif=camera_exif(rating=3).tobytes())
    out = analyze(str(p))
    assert out.facts.format == "AVIF" and out.facts.rating == 3 and looks_like(out, shown)


def test_multipage_tiff_animated_gif_webp_and_mpo_use_the_first_frame(tmp_path):
    first, second = photo(32, 320, 240), photo(33, 320, 240)
    for fmt, ext, kw in [("TIFF", "tif", {}), ("GIF", "gif", {}), ("WEBP", "webp", {"duration": 100}),
                         ("MPO", "mpo", {"quality": 92})]:  # fmt: skip
        p = save(first, tmp_path / f"multi.{ext}", fmt, save_all=True, append_images=[second], **kw)
        assert getattr(Image.open(p), "n_frames", 1) == 2
        out = analyze(str(p))
        assert out.facts.format == fmt, fmt
        assert looks_like(out, first, 12 if fmt == "GIF" else 8), fmt  # GIF: 256 colours
        assert not looks_like(out, second, 30), fmt


def test_sixteen_bit_png_and_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    shown = photo(34, 320, 240)
    rgb16 = np.asarray(shown).astype(np.uint16) * 257
    tif = tmp_path / "deep.tif"
    tifffile.imwrite(tif, rgb16, photometric="rgb")
    assert looks_like(analyze(str(tif)), shown, 2)
    grey = np.asarray(shown.convert("L")).astype(np.uint16) * 257
    png = save(Image.fromarray(grey), tmp_path / "deep.png")
    assert Image.open(png).mode.startswith("I")
    out = analyze(str(png))
    assert out.facts.format == "PNG" and looks_like(out, shown.convert("L"), 2)


def test_cmyk_jpeg_and_alpha_png(tmp_path):
    shown = photo(35, 320, 240)
    cmyk = save(shown.convert("CMYK"), tmp_path / "print.jpg", quality=95)
    assert Image.open(cmyk).mode == "CMYK"
    assert looks_like(analyze(str(cmyk)), shown, 10)
    rgba = shown.convert("RGBA")
    alpha = np.full((240, 320), 255, np.uint8)
    alpha[:, :80] = 0  # a transparent band: flattened on the neutral background
    rgba.putalpha(Image.fromarray(alpha))
    out = analyze(str(save(rgba, tmp_path / "cutout.png")))
    expected = Image.new("RGB", shown.size, decode.BACKGROUND)
    expected.paste(shown, mask=Image.fromarray(alpha))
    assert looks_like(out, expected, 3)


def test_capture_metadata_from_exif_and_xmp(tmp_path):
    exif = camera_exif(subsec="35", offset="-05:00", lens="Ndup 50mm", gps=(48.85, 2.35), rating=4)
    f = analyze(str(save(photo(36, 320, 240), tmp_path / "a.jpg", exif=exif.tobytes()))).facts
    assert f.capture_time == "2023-07-14T10:22:05.35-05:00"
    assert (f.camera_make, f.camera_model, f.lens, f.has_gps, f.rating) == ("Ndup", "TestCam 1", "Ndup 50mm", True, 4)
    plain = analyze(str(save(photo(36, 320, 240), tmp_path / "plain.jpg"))).facts
    assert (plain.capture_time, plain.camera, plain.lens, plain.has_gps, plain.rating) == (
        None,
        None,
        None,
        False,
        None,
    )
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description xmp:Rating="5"/></x:xmpmeta>'
    rated = analyze(str(save(photo(36, 320, 240), tmp_path / "rated.jpg", xmp=xmp))).facts
    assert rated.rating == 5


@pytest.mark.parametrize(
    "date,subsec,offset,expected",
    [
        ("2023:07:14 10:22:05", None, None, "2023-07-14T10:22:05"),
        ("2023:07:14 10:22:05", "007", "+05:30", "2023-07-14T10:22:05.007+05:30"),
        ("2023:07:14 10:22:05\x00", " 5 ", "garbage", "2023-07-14T10:22:05.5"),
        ("0000:00:00 00:00:00", None, None, None),
        ("2023:02:30 10:00:00", None, None, None),
        ("", None, None, None),
        (None, None, None, None),
    ],
)
def test_exif_capture_time(date, subsec, offset, expected):
    assert exif_capture_time(date, subsec, offset) == expected


def test_sharpness_and_exposure_measures():
    sharp = photo(37, 640, 480)
    s, c = measure(sharp)
    blurred, _ = measure(sharp.filter(ImageFilter.GaussianBlur(3)))
    _, blown = measure(ImageEnhance.Brightness(sharp).enhance(2.2))
    assert blurred < s / 2 and c < 0.01 and blown > 0.05


def test_broken_exif_never_drops_a_photo(tmp_path):
    exif = camera_exif(taken="not a date")
    out = analyze(str(save(photo(38, 320, 240), tmp_path / "a.jpg", exif=exif.tobytes())))
    assert isinstance(out, Decoded) and out.facts.capture_time is None and out.facts.camera_make == "Ndup"


def test_missing_heif_decoder_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    import builtins

    decode._register_plugins.cache_clear()
    real_import = builtins.__import__

    def no_heif(name, *a, **kw):
        if name == "pillow_heif":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    p = tmp_path / "x.heic"
    p.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    monkeypatch.setattr(builtins, "__import__", no_heif)
    try:
        out = analyze(str(p))
    finally:
        monkeypatch.undo()
        decode._register_plugins.cache_clear()
    assert isinstance(out, Failure) and "pillow-heif package is not installed" in out.reason


def test_jpeg_bytes_inside_other_names_still_decode(tmp_path):
    buf = io.BytesIO()
    photo(39, 200, 150).save(buf, "JPEG")
    p = tmp_path / "IMG_1.HEIC"  # a JPEG with a HEIC name: content decides
    p.write_bytes(buf.getvalue())
    assert analyze(str(p)).facts.format == "JPEG"
