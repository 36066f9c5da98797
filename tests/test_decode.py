import numpy as np
import pytest
from conftest import jpeg_bytes, photo, save
from PIL import Image

from ndup import decode
from ndup.decode import MODEL_SIDE, analyze, estimate_jpeg_quality, to_rgb
from ndup.records import Decoded, Failure, NotAnImage


def model_view(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB").resize((MODEL_SIDE, MODEL_SIDE), Image.BILINEAR), dtype=np.float32)


def test_decoded_facts_and_pixels(tmp_path):
    im = photo(1)
    p = save(im, tmp_path / "a.jpg", quality=85)
    out = analyze(str(p))
    assert isinstance(out, Decoded)
    f = out.facts
    assert (f.format, f.width, f.height) == ("JPEG", 640, 480)
    assert len(f.content_hash) == 64 and len(f.phash) == 16 and len(f.dhash) == 16
    assert abs(f.quality - 85) <= 2 and not f.lossless
    assert out.pixels.shape == (MODEL_SIDE, MODEL_SIDE, 3) and out.pixels.dtype == np.uint8
    assert np.abs(out.pixels.astype(np.float32) - model_view(im)).mean() < 6


@pytest.mark.parametrize(
    "orientation,transpose",
    [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)],
)
def test_exif_orientation_is_applied_before_anything_sees_the_pixels(tmp_path, orientation, transpose):
    shown = photo(2, 640, 400)
    stored = shown.transpose(transpose)  # what a camera writes; the tag tells viewers how to turn it back
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = save(stored, tmp_path / "rot.jpg", quality=92, exif=exif.tobytes())
    out = analyze(str(p))
    assert (out.facts.width, out.facts.height) == (640, 400)
    assert np.abs(out.pixels.astype(np.float32) - model_view(shown)).mean() < 6
    plain = analyze(str(save(shown, tmp_path / "plain.jpg", quality=92)))
    assert bin(int(plain.facts.phash, 16) ^ int(out.facts.phash, 16)).count("1") <= 4


def test_large_jpeg_is_draft_decoded(tmp_path, monkeypatch):
    p = save(photo(3, 640, 480).resize((4000, 3000)), tmp_path / "big.jpg", quality=80)
    sizes = []
    real_load = Image.Image.load

    def spy(self):
        sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    out = analyze(str(p))
    assert (out.facts.width, out.facts.height) == (4000, 3000)
    assert sizes and max(w for w, _ in sizes) <= 1000  # libjpeg scaled the decode down (1/8: 500x375)


@pytest.mark.parametrize(
    "size,orientation,name,alike",
    [
        ((1280, 960), 1, "a.jpg", True),  # the model's 256 px and registration's 480 px both decode it at 1/2
        ((1280, 960), 6, "turned.jpg", True),  # and both turn it upright
        ((4000, 3000), 1, "camera.jpg", True),  # both at 1/8
        ((900, 900), 1, "square.jpg", False),  # at 1/2 for the model, whole for registration: read again
        ((640, 480), 1, "b.png", True),  # other formats are decoded whole either way
    ],
)
def test_a_scan_keeps_the_registration_picture_that_reading_the_file_again_would_give(
    tmp_path, size, orientation, name, alike
):
    from ndup.scan import registration_view

    exif = Image.Exif()
    exif[0x0112] = orientation
    p = save(photo(4, 640, 480).resize(size), tmp_path / name, exif=exif.tobytes())
    assert analyze(str(p)).grey is None  # only when asked for
    kept = analyze(str(p), keep_view=True).grey
    again = registration_view(str(p)).grey
    if alike:
        assert kept is not None and kept.shape == again.shape and np.array_equal(kept, again)
    else:
        assert kept is None


def test_modes_are_converted_correctly():
    assert to_rgb(Image.new("P", (4, 4), 0)).mode == "RGB"
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == decode.BACKGROUND
    la = Image.new("LA", (4, 4), (0, 255))
    assert to_rgb(la).getpixel((0, 0)) == (0, 0, 0)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    sixteen = Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (156, 156, 156)  # 40000/257, not clipped to 255
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    assert to_rgb(pal).getpixel((0, 0)) == decode.BACKGROUND


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp"), ("GIF", "gif")])
def test_every_common_format_decodes(tmp_path, fmt, ext):
    p = save(photo(4, 320, 240), tmp_path / f"x.{ext}", fmt)
    out = analyze(str(p))
    assert isinstance(out, Decoded) and out.facts.format == fmt


def test_formats_are_found_by_content_not_name(tmp_path):
    p = tmp_path / "actually_png.jpg"
    save(photo(5, 200, 150), p, "PNG")
    assert analyze(str(p)).facts.format == "PNG"
    q = tmp_path / "no_extension"
    q.write_bytes(jpeg_bytes(photo(5, 200, 150)))
    assert analyze(str(q)).facts.format == "JPEG"


def test_bad_files_are_failures_with_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a photo")
    (tmp_path / "cut.jpg").write_bytes(jpeg_bytes(photo(6))[:2000])
    (tmp_path / "notes.txt").write_text("hello")
    assert analyze(str(tmp_path / "empty.jpg")) == Failure(str(tmp_path / "empty.jpg"), "empty file (0 bytes)")
    assert "not an image" in analyze(str(tmp_path / "text.jpg")).reason
    assert "truncated" in analyze(str(tmp_path / "cut.jpg")).reason
    assert isinstance(analyze(str(tmp_path / "notes.txt")), NotAnImage)
    assert "disappeared" in analyze(str(tmp_path / "gone.jpg")).reason


def test_decompression_bomb_guard_is_kept_and_reported(tmp_path, monkeypatch):
    p = save(photo(7, 400, 300), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    out = analyze(str(p))
    assert isinstance(out, Failure) and "too large" in out.reason


def test_jpeg_quality_estimate_tracks_the_encoder_setting(tmp_path):
    import io

    for q in (30, 60, 75, 90, 98):
        im = Image.open(io.BytesIO(jpeg_bytes(photo(8, 64, 64), quality=q)))
        assert abs(estimate_jpeg_quality(im.quantization) - q) <= 3
    assert estimate_jpeg_quality(None) is None
