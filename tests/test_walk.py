import os
from pathlib import Path

from ndup.records import Failure
from ndup.walk import walk


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def paths(items):
    return [i.path for i in items if not isinstance(i, Failure)]


def test_walk_is_recursive_sorted_and_skips_hidden(tmp_path):
    for rel in ["b.jpg", "a.jpg", "sub/c.jpg", ".hidden.jpg", ".secret/d.jpg", "sub/deeper/e.jpg"]:
        touch(tmp_path / rel)
    found = [os.path.relpath(p, tmp_path) for p in paths(walk([tmp_path]))]
    assert found == ["a.jpg", "b.jpg", "sub/c.jpg", "sub/deeper/e.jpg"]
    with_hidden = {os.path.relpath(p, tmp_path) for p in paths(walk([tmp_path], hidden=True))}
    assert {".hidden.jpg", ".secret/d.jpg"} <= with_hidden


def test_excludes_match_names_and_relative_paths(tmp_path, monkeypatch):
    for rel in ["keep.jpg", "skip.tmp", "Thumbs/x.jpg", "a/Thumbs/y.jpg", "a/z.jpg"]:
        touch(tmp_path / rel)
    found = {os.path.relpath(p, tmp_path) for p in paths(walk([tmp_path], excludes=("*.tmp", "Thumbs")))}
    assert found == {"keep.jpg", "a/z.jpg"}
    found = {os.path.relpath(p, tmp_path) for p in paths(walk([tmp_path], excludes=("a/*",)))}
    assert found == {"keep.jpg", "skip.tmp", "Thumbs/x.jpg"}
    # however the root is written: relative, with a trailing separator, with "..": paths below it
    monkeypatch.chdir(tmp_path / "a")
    for root in ("..", f"..{os.sep}", f"..{os.sep}a{os.sep}.."):
        found = {os.path.relpath(p, tmp_path) for p in paths(walk([Path(root)], excludes=("a/*",)))}
        assert found == {"keep.jpg", "skip.tmp", "Thumbs/x.jpg"}, root


def test_symlinks_skipped_by_default_and_loops_end_when_followed(tmp_path):
    touch(tmp_path / "real/photo.jpg")
    os.symlink(tmp_path / "real", tmp_path / "link_to_real")
    os.symlink(tmp_path, tmp_path / "real/loop")  # a loop back to the root
    os.symlink(tmp_path / "real/photo.jpg", tmp_path / "file_link.jpg")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "dangling.jpg")
    assert [os.path.relpath(p, tmp_path) for p in paths(walk([tmp_path]))] == ["real/photo.jpg"]
    followed = paths(walk([tmp_path], follow_links=True))
    # the same file reached through three names is counted once, and the loop terminates
    assert len(followed) == 1


def test_hard_links_and_overlapping_roots_count_once(tmp_path):
    a = touch(tmp_path / "a.jpg")
    os.link(a, tmp_path / "b.jpg")
    touch(tmp_path / "sub/c.jpg")
    found = paths(walk([tmp_path, tmp_path / "sub", a]))
    assert len(found) == 2


def test_a_root_may_be_a_file_and_a_missing_root_is_a_failure(tmp_path):
    f = touch(tmp_path / "one.jpg")
    items = list(walk([f, tmp_path / "nope"]))
    assert items[0].path == str(f)
    assert isinstance(items[1], Failure) and "cannot read" in items[1].reason


def test_unreadable_folder_is_reported_not_fatal(tmp_path, monkeypatch):
    touch(tmp_path / "ok.jpg")
    locked = tmp_path / "locked"
    touch(locked / "x.jpg")
    real_scandir = os.scandir

    def scandir(path):  # chmod 0 does not stop root, so deny the listing the way the kernel would
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = list(walk([tmp_path]))
    assert Failure(str(locked), "cannot list folder: Permission denied") in items
    assert [i.path for i in items if not isinstance(i, Failure)] == [str(tmp_path / "ok.jpg")]
