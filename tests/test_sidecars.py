"""Which sidecar files travel with an image."""

from ndup.sidecars import sidecars_of


def names(paths):
    return [p.name for p in paths]


def test_sidecars_by_stem_and_by_full_name(tmp_path):
    for n in ["IMG_1.HEIC", "IMG_1.AAE", "IMG_1.HEIC.xmp", "IMG_1.HEIC.json", "IMG_10.xmp", "IMG_1.txt",
              "IMG_1.HEIC.supplemental-metadata.json", "IMG_2.jpg", "img_2.XMP"]:  # fmt: skip
        (tmp_path / n).write_text("x")
    assert names(sidecars_of(tmp_path / "IMG_1.HEIC")) == [
        "IMG_1.AAE",
        "IMG_1.HEIC.json",
        "IMG_1.HEIC.supplemental-metadata.json",
        "IMG_1.HEIC.xmp",
    ]
    assert names(sidecars_of(tmp_path / "IMG_2.jpg")) == ["img_2.XMP"]  # names compare without case


def test_a_stem_sidecar_shared_by_a_raw_jpeg_pair_or_live_photo_stays():
    folder = ["IMG_3.CR2", "IMG_3.JPG", "IMG_3.xmp", "IMG_3.JPG.xmp"]
    assert names(sidecars_of("/p/IMG_3.JPG", folder)) == ["IMG_3.JPG.xmp"]
    assert names(sidecars_of("/p/IMG_3.CR2", folder)) == []
    live = ["IMG_4.HEIC", "IMG_4.MOV", "IMG_4.AAE"]
    assert names(sidecars_of("/p/IMG_4.HEIC", live)) == []
    assert [str(p) for p in sidecars_of("/p/IMG_5.HEIC", ["IMG_5.HEIC", "IMG_5.aae"])] == ["/p/IMG_5.aae"]


def test_no_sidecars_for_sidecars_missing_folders_or_lonely_files(tmp_path):
    assert sidecars_of(tmp_path / "IMG_1.xmp", ["IMG_1.xmp", "IMG_1.xmp.json"]) == []
    assert sidecars_of(tmp_path / "nowhere" / "a.jpg") == []
    (tmp_path / "a.jpg").write_text("x")
    assert sidecars_of(tmp_path / "a.jpg") == []
