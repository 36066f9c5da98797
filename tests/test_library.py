"""A real photo library end to end: phone HEICs and their exports, bursts, RAW+JPEG pairs, many formats."""

import os
import sqlite3

import pytest
from conftest import photo, save, scan
from imagegen import camera_exif, synthetic_photo
from PIL import ImageEnhance, ImageFilter
from rawgen import dng_bytes

from ndup.store import Store, migrations


def groups_with(plan, path):
    return [g for g in plan.groups if any(m.path == str(path) for m in g.members)]


def member(group, path):
    return next(m for m in group.members if m.path == str(path))


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    pytest.importorskip("rawpy")
    root = tmp_path_factory.mktemp("photos")
    p = {}
    # an iPhone photo and the JPEG the phone exported of it
    iphone = camera_exif(make="Apple", model="iPhone 13", subsec="120", offset="+02:00").tobytes()
    shot = photo(60, 640, 480)
    p["heic"] = save(shot, root / "iPhone/IMG_0001.HEIC", "HEIF", quality=90, exif=iphone)
    p["heic_export"] = save(shot, root / "Exports/IMG_0001.JPG", quality=90, exif=iphone)
    # a burst: three frames 0.4 s apart, the second blurred, the third blown out; and an export of the first
    wide = synthetic_photo(61, 700, 480)
    frames = [
        wide.crop((0, 0, 640, 480)),
        wide.crop((20, 0, 660, 480)).filter(ImageFilter.GaussianBlur(3)),
        ImageEnhance.Brightness(wide.crop((40, 0, 680, 480))).enhance(2.5),
    ]
    for i, (frame, sub) in enumerate(zip(frames, ("000", "400", "800"))):
        exif = camera_exif(model="Burst 5", taken="2023:08:01 09:00:01", subsec=sub).tobytes()
        p[f"burst{i}"] = save(frame, root / f"Burst/DSC_{i:04d}.JPG", quality=92, exif=exif)
    exif0 = camera_exif(model="Burst 5", taken="2023:08:01 09:00:01", subsec="000").tobytes()
    p["burst0_small"] = save(frames[0].resize((320, 240)), root / "Exports/DSC_0000_small.jpg", quality=85, exif=exif0)
    # a RAW with the JPEG the camera wrote beside it, and a JPEG exported from the RAW
    capture = dict(model="Raw 7", taken="2023:09:09 12:00:00")
    scene = photo(62, 640, 480)
    p["raw"] = root / "Camera/IMG_0002.DNG"
    p["raw"].parent.mkdir(parents=True)
    p["raw"].write_bytes(dng_bytes(scene, preview="jpeg", preview_side=640, **capture))
    p["raw_jpeg"] = save(scene, root / "Camera/IMG_0002.JPG", quality=95, exif=camera_exif(**capture).tobytes())
    p["raw_export"] = save(scene, root / "Exports/holiday.jpg", quality=80, exif=camera_exif(**capture).tobytes())
    # one picture in many formats
    many = photo(63, 480, 360)
    p["avif"] = save(many, root / "Formats/m.avif", "AVIF", quality=90)
    p["tiff_pages"] = save(many, root / "Formats/m.tif", "TIFF", save_all=True, append_images=[photo(64, 480, 360)])
    p["cmyk"] = save(many.convert("CMYK"), root / "Formats/m_cmyk.jpg", quality=95)
    p["mpo"] = save(many, root / "Formats/m.mpo", "MPO", quality=95, save_all=True, append_images=[photo(65, 480, 360)])
    p["webp_anim"] = save(many, root / "Formats/m.webp", "WEBP", save_all=True, append_images=[photo(66, 480, 360)])
    rgba = many.convert("RGBA")
    rgba.putalpha(255)
    p["alpha"] = save(rgba, root / "Formats/m_alpha.png")
    for i in range(4):
        save(photo(70 + i, 640, 480), root / f"Other/o{i}.jpg", quality=90, exif=camera_exif(model="Raw 7").tobytes())
    return root, p


@pytest.fixture(scope="module")
def plan(library, tmp_path_factory):
    root, _ = library
    return scan(root, tmp_path_factory.mktemp("db") / "ndup.db")


def test_no_failures(plan):
    assert plan.failures == ()


def test_iphone_heic_and_its_jpeg_export_are_one_group_kept_as_heic(library, plan):
    _, p = library
    [g] = groups_with(plan, p["heic"])
    assert g.tier == "copy" and g.keep == str(p["heic"])
    export = member(g, p["heic_export"])
    assert export.action == "delete" and "keeper won on format (HEIF vs JPEG q90)" in export.reason


def test_a_burst_is_a_similar_group_with_the_sharpest_well_exposed_frame_as_pick(library, plan):
    _, p = library
    copies = [g for g in groups_with(plan, p["burst0"]) if g.tier != "similar"]
    [similar] = [g for g in groups_with(plan, p["burst1"]) if g.tier == "similar"]
    assert similar.keep == str(p["burst0"])
    assert {m.path for m in similar.members} >= {str(p["burst0"]), str(p["burst1"])}
    assert member(similar, p["burst1"]).action == "review"
    assert "pick won on sharpness" in member(similar, p["burst1"]).reason
    if str(p["burst2"]) in {m.path for m in similar.members}:
        assert "pick won on exposure" in member(similar, p["burst2"]).reason
    # no burst frame is ever proposed for deletion; the small export of frame 0 is a copy of it
    for name in ("burst0", "burst1", "burst2"):
        assert all(
            m.action != "delete" for g in groups_with(plan, p[name]) for m in g.members if m.path == str(p[name])
        )
    [copy] = copies
    assert copy.keep == str(p["burst0"]) and member(copy, p["burst0_small"]).action == "delete"


def test_raw_and_its_camera_jpeg_are_never_duplicates(library, plan):
    _, p = library
    assert not [g for g in groups_with(plan, p["raw"]) if str(p["raw_jpeg"]) in {m.path for m in g.members}]
    assert all(m.action != "delete" for g in groups_with(plan, p["raw_jpeg"]) for m in g.members)
    [g] = groups_with(plan, p["raw_export"])  # an export of the RAW is a copy, and the RAW is kept
    assert g.keep == str(p["raw"]) and member(g, p["raw_export"]).action == "delete"
    assert "RAW (DNG)" in member(g, p["raw_export"]).reason


def test_one_picture_in_many_formats_is_one_group(library, plan):
    _, p = library
    names = ["avif", "tiff_pages", "cmyk", "mpo", "webp_anim", "alpha"]
    [g] = groups_with(plan, p["avif"])
    assert {m.path for m in g.members} == {str(p[n]) for n in names}
    assert g.keep == str(p["avif"])  # HEIF/AVIF rank above lossless, then JPEG, then WebP


def test_an_old_cache_is_migrated_and_its_files_read_again(tmp_path):
    lib = tmp_path / "lib"
    a = save(photo(80, 320, 240), lib / "a.jpg", exif=camera_exif(lens="Old 50mm").tobytes())
    db_path = tmp_path / "old.db"
    from sqlite_utils import Database

    db = Database(sqlite3.connect(str(db_path)))
    migrations.apply(db, stop_before="m002_capture_metadata")  # the cache as the first milestone left it
    st = os.stat(a)
    db["files"].insert({"path": str(a), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "kind": "image",
                        "decoder_version": 1, "content_hash": "h", "format": "JPEG", "width": 320, "height": 240,
                        "phash": "0" * 16, "dhash": "0" * 16, "lossless": 0, "exif_tags": 0})  # fmt: skip
    db.close()
    plan = scan(lib, db_path)
    assert plan.summary["decoded"] == 1
    store = Store.open(db_path)
    try:
        assert [m.name for m in migrations.applied(store.db)] == [
            "m001_initial",
            "m002_capture_metadata",
            "m003_review_decisions",
            "m004_apply_journal",
            "m005_embedding_aux",
        ]
        [rec] = store.image_records([str(a)])
        assert rec.facts.lens == "Old 50mm" and rec.facts.capture_time == "2023-07-14T10:22:05"
        assert rec.facts.sharpness and rec.facts.clipped is not None
    finally:
        store.close()
