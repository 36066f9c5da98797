import io

import pytest
from PIL import Image

from ndup.formats import SNIFF_BYTES, raw_subtype, sniff


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
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "AVIF"),  # AVIF said by a compatible brand
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1heicmiaf", "HEIF"),
        (b"IIRO\x08\x00\x00\x00", "ORF"),
        (b"IIU\x00\x08\x00\x00\x00", "RW2"),
        (b"FOVb", "X3F"),
        (b"%PDF-1.7\n", None),
        (b"hello world", None),
        (b"", None),
        (b"\x00\x00\x00\x18ftypmp42", None),  # a video
    ],
)
def test_sniff_by_content(head, expected):
    assert sniff(head) == expected


@pytest.mark.parametrize(
    "container,path,expected",
    [
        ("TIFF", "/p/IMG_1.DNG", "DNG"),
        ("TIFF", "/p/img_1.nef", "NEF"),
        ("TIFF", "/p/scan.tif", None),
        ("TIFF", "/p/no_extension", None),
        ("CR3", "/p/renamed.jpg", "CR3"),  # containers that are always RAW, whatever the name
        ("RAF", "/p/x", "RAF"),
        ("ORF", "/p/x.orf", "ORF"),
        ("JPEG", "/p/IMG_1.NEF", None),  # a JPEG named like a RAW is a JPEG
    ],
)
def test_raw_subtype_from_container_and_name(container, path, expected):
    assert raw_subtype(container, path) == expected
