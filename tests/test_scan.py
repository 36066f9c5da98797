"""End to end through the pipeline: a generated library with copies and distinct photos."""

import os
import shutil
import sqlite3

import pytest
from conftest import group_of, photo, save, scan
from PIL import Image, ImageEnhance, ImageOps

from ndup.store import Store


def make_library(root):
    """Originals, the copies a photo library collects, and unrelated photos. Returns {name: path}."""
    a = photo(100, 800, 600)
    p = {}
    p["a"] = save(a, root / "2019/a.jpg", quality=95)
    p["a_dup"] = root / "backup/a.jpg"
    p["a_dup"].parent.mkdir(parents=True)
    shutil.copy2(p["a"], p["a_dup"])
    p["a_small"] = save(a.resize((400, 300), Image.LANCZOS), root / "export/a_small.jpg", quality=85)
    p["a_q40"] = save(a, root / "export/a_q40.jpg", quality=40)
    p["a_bright"] = save(ImageEnhance.Brightness(a).enhance(1.25), root / "edits/a_bright.jpg", quality=90)
    p["a_flip"] = save(ImageOps.mirror(a), root / "edits/a_flip.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side; viewers (and ndup) turn it upright
    p["a_exif"] = save(
        a.transpose(Image.Transpose.ROTATE_90), root / "phone/a_exif.jpg", quality=90, exif=exif.tobytes()
    )
    b = photo(101, 640, 480)
    p["b"] = save(b, root / "2020/b.png")
    p["b_jpg"] = save(b, root / "2020/b.jpg", quality=88)
    for i in range(8):
        p[f"other{i}"] = save(photo(200 + i, 640, 480), root / f"misc/other{i}.jpg", quality=90)
    (root / "misc/readme.txt").write_text("not a photo")
    return p


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    return root, make_library(root)


@pytest.fixture(scope="module")
def scanned(library, tmp_path_factory):
    root, p = library
    db = tmp_path_factory.mktemp("db") / "ndup.db"
    return root, p, db, scan(root, db)


def test_copies_group_with_their_original(scanned):
    _, p, _, plan = scanned
    g = group_of(plan, p["a"])
    assert g is not None and g.keep == str(p["a"])
    members = {m.path for m in g.members}
    for name in ["a_dup", "a_small", "a_q40", "a_bright", "a_flip", "a_exif"]:
        assert str(p[name]) in members, name
    assert {m.action for m in g.members if m.path != str(p["a"])} == {"delete"}


def test_lossless_original_is_kept_over_its_jpeg_export(scanned):
    _, p, _, plan = scanned
    g = group_of(plan, p["b"])
    assert g.keep == str(p["b"]) and {m.path for m in g.members} == {str(p["b"]), str(p["b_jpg"])}
    [export] = [m for m in g.members if m.action == "delete"]
    assert "format (PNG vs JPEG q88)" in export.reason


def test_distinct_photos_are_never_grouped_as_copies(scanned):
    _, p, _, plan = scanned
    for i in range(8):
        assert group_of(plan, p[f"other{i}"]) is None


def test_summary_counts(scanned):
    _, p, _, plan = scanned
    s = plan.summary
    assert s["files_seen"] == len(p) + 1 and s["images"] == len(p) and s["failures"] == 0
    assert s["decoded"] == len(p)
    assert s["to_delete"] == 7 and s["bytes_freed"] == sum(
        m.size for g in plan.groups for m in g.members if m.action == "delete"
    )


def test_rescan_of_unchanged_library_decodes_nothing(scanned):
    root, _, db, first = scanned
    again = scan(root, db)
    assert again.summary["decoded"] == 0 and again.summary["embedded"] == 0
    assert [(g.tier, g.keep, [m.path for m in g.members]) for g in again.groups] == [
        (g.tier, g.keep, [m.path for m in g.members]) for g in first.groups
    ]
    store = Store.open(db)
    try:
        assert store.load_plan().run_id == again.run_id
        assert store.load_plan(first.run_id).groups == first.groups
    finally:
        store.close()


def test_changed_file_is_read_again(tmp_path):
    lib = tmp_path / "lib"
    a = save(photo(1), lib / "a.jpg")
    save(photo(2), lib / "b.jpg")
    db = tmp_path / "ndup.db"
    assert scan(lib, db).summary["decoded"] == 2
    save(photo(3), a)
    os.utime(a, ns=(1, 1_000_000_000))
    assert scan(lib, db).summary["decoded"] == 1


def test_exact_duplicates_are_embedded_once(tmp_path):
    lib = tmp_path / "lib"
    a = save(photo(1), lib / "a.jpg")
    for i in range(3):
        shutil.copy(a, lib / f"copy{i}.jpg")
    plan = scan(lib, tmp_path / "ndup.db")
    assert plan.summary["embedded"] == 1
    [g] = plan.groups
    assert g.tier == "exact" and len(g.members) == 4


def test_bad_files_are_reported_cached_and_never_stop_the_scan(tmp_path):
    lib = tmp_path / "lib"
    save(photo(1), lib / "good.jpg")
    (lib / "empty.jpg").write_bytes(b"")
    (lib / "text.png").write_text("plain text")
    good_bytes = (lib / "good.jpg").read_bytes()
    (lib / "cut.jpg").write_bytes(good_bytes[: len(good_bytes) // 3])
    db = tmp_path / "ndup.db"
    plan = scan(lib, db)
    reasons = {os.path.basename(f.path): f.reason for f in plan.failures}
    assert set(reasons) == {"empty.jpg", "text.png", "cut.jpg"}
    assert plan.summary["images"] == 1 and plan.summary["failures"] == 3
    again = scan(lib, db)
    assert again.summary["decoded"] == 0 and len(again.failures) == 3  # not retried until they change


def test_interrupted_scan_keeps_finished_batches_and_resumes(tmp_path):
    from ndup.scan import load_embedder

    lib = tmp_path / "lib"
    for i in range(12):
        save(photo(300 + i, 320, 240), lib / f"p{i:02d}.jpg")
    db = tmp_path / "ndup.db"
    calls = []

    def flaky(settings):
        real = load_embedder(settings)

        class Interrupting:
            def embed(self, pixels, aspects=None):
                calls.append(len(pixels))
                if len(calls) == 3:
                    raise KeyboardInterrupt
                return real.embed(pixels, aspects)

        return Interrupting()

    from ndup.config import ScanSettings
    from ndup.scan import run_scan

    with pytest.raises(KeyboardInterrupt):
        run_scan(ScanSettings(roots=(lib,), db_path=db, workers=1, batch_size=4), embedder_factory=flaky)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM files WHERE kind='image'").fetchone()[0] == 8
        assert conn.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    plan = scan(lib, db, batch_size=4)
    assert plan.summary["decoded"] == 4 and plan.summary["images"] == 12


def test_the_network_starts_before_the_first_batch_is_read_only_when_there_is_more_than_a_batch(tmp_path):
    """Loading the network takes seconds: with more than a batch to read it starts at once, beside
    the first files' decoding; a smaller read starts it only for a content not embedded yet. One
    started early and never needed is stopped at once, not waited for."""
    from harness import pixel_embedder

    from ndup.config import ScanSettings
    from ndup.scan import Progress, run_scan

    events: list[str] = []

    class Watch(Progress):
        reading = False

        def stage(self, name: str, total: int | None = None) -> None:
            self.reading = name == "Reading images"

        def advance(self, n: int = 1) -> None:
            if self.reading:
                events.append("read")

    class Network:
        def __init__(self, settings):
            events.append("network")
            self._net = pixel_embedder(settings)

        def embed(self, pixels, aspects=None):
            return self._net.embed(pixels, aspects)

        def close(self, kill=False):
            events.append("killed" if kill else "closed")

    def touch(paths):  # touched, not changed: read again, with nothing new to embed
        for p in paths:
            os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))

    lib = tmp_path / "lib"
    for i in range(12):
        save(photo(700 + i, 160, 120), lib / f"p{i:02d}.jpg")
    settings = ScanSettings(roots=(lib,), db_path=tmp_path / "ndup.db", workers=1, batch_size=4)
    run_scan(settings, Watch(), embedder_factory=Network)
    assert events[0] == "network" and events.count("network") == 1 and events[-1] == "closed"
    events.clear()
    touch(sorted(lib.iterdir())[:3])
    run_scan(settings, Watch(), embedder_factory=Network)
    assert "read" in events and "network" not in events
    events.clear()
    touch(sorted(lib.iterdir()))  # more than a batch: started early, never needed
    run_scan(settings, Watch(), embedder_factory=Network)
    assert events[0] == "network" and events[-1] == "killed"
    events.clear()
    save(photo(799, 160, 120), lib / "new.jpg")
    run_scan(settings, Watch(), embedder_factory=Network)
    assert events.count("network") == 1 and events[-1] == "closed"


def test_worker_processes_give_the_same_result(tmp_path, library):
    root, _ = library
    one = scan(root, tmp_path / "one.db", workers=1)
    two = scan(root, tmp_path / "two.db", workers=2)
    assert [(g.tier, g.keep, {m.path for m in g.members}) for g in one.groups] == [
        (g.tier, g.keep, {m.path for m in g.members}) for g in two.groups
    ]


def test_pairs_marked_not_duplicates_in_review_never_group_again(tmp_path):
    lib = tmp_path / "lib"
    a = save(photo(41), lib / "a.jpg", quality=95)
    save(photo(41), lib / "a_q60.jpg", quality=60)
    db = tmp_path / "ndup.db"
    [g] = [g for g in scan(lib, db).groups if g.tier == "copy"]
    store = Store.open(db)
    try:
        hashes = [r.facts.content_hash for r in store.image_records([m.path for m in g.members])]
        store.add_ignore_set(hashes, [m.path for m in g.members])
    finally:
        store.close()
    assert group_of(scan(lib, db), a) is None
