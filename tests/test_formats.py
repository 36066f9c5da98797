import io

import pytest
from PIL import Image

from ndup.formats import SNIFF_BYTES, sniff


@pytest.mark.parametrize(
    "fmt,expected",
    [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WEBP"), ("TIFF", "TIFF"), ("BMP", "BMP"), ("GIF", "GIF")],
)
def test_sniff_recognises_pillow_written_formats(fmt, expected):
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(buf, fmt)
    assert sniff(buf.getvalue()[:SNIFF_BYTES]) == expected


@pytest.mark.parametrize(
    "head,expected",
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "AVIF"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01", "CR3"),
        (b"FUJIFILMCCD-RAW 0201", "RAF"),
        (b"%PDF-1.7\n", None),
        (b"hello world", None),
        (b"", None),
        (b"\x00\x00\x00\x18ftypmp42", None),  # a video
    ],
)
def test_sniff_by_content(head, expected):
    assert sniff(head) == expected
