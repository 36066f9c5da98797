"""Hostile files (issue 7): a scan reads or reports every one, with its reason, and completes; no
traceback, bounded memory, nothing written into the scanned folders, odd names kept byte for byte.

The corpus is written by tests/hostile.py; docs/reliability.md has the counts and how to run more.
"""

import io
import json
import os
import shutil
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from conftest import photo, save
from harness import (
    LONG,
    MAX_RSS_BYTES,
    contents,
    pixel_embedder,
    private_mount_prefix,
    run_ndup,
    snapshot,
    without_dac_override,
)
from hostile import MANY_FILES, MANY_IMAGES, ODD_NAMES, write_corpus, write_odd_names
from rich.console import Console

from ndup import decode
from ndup import scan as scan_module
from ndup import walk as walk_module
from ndup.config import ScanSettings
from ndup.records import Failure
from ndup.render import print_plan
from ndup.scan import run_scan
from ndup.store import Store

KIND = {"image": "image", "failed": "failure", "other": "other"}


def fast_scan(roots, db: Path, **kw):
    """An in-process scan with the stand-in network (harness.PixelEmbedder)."""
    roots = tuple(Path(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots]))
    kw.setdefault("workers", 1)
    return run_scan(ScanSettings(roots=roots, db_path=db, **kw), embedder_factory=pixel_embedder)


def cached(db: Path) -> dict[str, str]:
    """path -> image | failure | other, for every file the cache knows."""
    with Store.open(db) as store:
        return {path: KIND[c.kind] for path, c in store.cached_stats().items()}


def check_outcomes(cases, root: Path, failures: dict[str, str], kinds: dict[str, str]) -> None:
    """Every case came out as it must, and no failure appeared that no case expects."""
    wrong = []
    for case in cases:
        path = case.path(root)
        got = kinds.get(path, "absent")
        if got != case.expect:
            wrong.append((case.name, case.expect, got, failures.get(path)))
        elif case.expect == "failure" and case.reason not in failures[path]:
            wrong.append((case.name, case.reason, failures[path]))
    assert wrong == []
    assert set(failures) == {c.path(root) for c in cases if c.expect == "failure"}


def test_each_hostile_file_is_read_or_reported_with_its_reason(tmp_path):
    root = tmp_path / "corpus"
    cases = write_corpus(root, many_images=None)
    db = tmp_path / "cache/ndup.db"
    plan = fast_scan(root, db, follow_links=True)
    failures = {f.path: f.reason for f in plan.failures}
    check_outcomes(cases, root, failures, cached(db))
    s = plan.summary
    assert s["files_seen"] == sum(c.expect != "absent" for c in cases)
    assert (s["images"], s["failures"]) == (sum(c.expect == "image" for c in cases), len(failures))
    # one photo under every odd name: identical bytes, so one group holds them all, whatever the model
    same = {c.path(root) for c in cases if c.name.startswith("names/")}
    [group] = [g for g in plan.groups if g.tier != "similar" and same & {m.path for m in g.members}]
    assert same <= {m.path for m in group.members}
    # shown as a table: each odd name on one line, escaped the way `ls -b` does
    buf = io.StringIO()
    print_plan(plan, Console(file=buf, width=400))
    text = buf.getvalue()
    for escaped in ("caf\\xe9.jpg", "new\\nline.jpg", "tab\\tand\\rcarriage.jpg", "\\u202etxt.jpg",
                    "\\xff\\xfe folder/inside.jpg", "🎉 party 🐈\u200d⬛.jpg", "with  spaces .jpg"):  # fmt: skip
        assert escaped in text, escaped
    assert not any(ch in text for ch in "\r\t\x00\x1b\u202e\udce9\udcff")  # nothing raw that breaks a line or lies
    # a second scan reads nothing again: failures are cached until their files change
    again = fast_scan(root, db, follow_links=True)
    assert again.summary["decoded"] == 0 and {f.path for f in again.failures} == set(failures)


@pytest.mark.slow
def test_the_whole_corpus_in_one_real_scan(tmp_path):
    """`ndup scan` as a user runs it, worker processes and the real network, over every hostile file and
    a folder of 10,000 tiny files: exit 0, JSON only on stdout, nothing on stderr, bounded memory, and
    not one byte written into the scanned folders."""
    root = tmp_path / "corpus"
    cases = write_corpus(root, many_images=MANY_FILES if LONG else MANY_IMAGES)
    before = snapshot(root)
    db = tmp_path / "cache/ndup.db"
    ran = run_ndup("scan", root, "--db", db, "--json", "--follow-links", "--workers", "2", timeout=3600)
    assert (ran.returncode, ran.err) == (0, "")
    doc = json.loads(ran.out)
    failures = {f["path"]: f["reason"] for f in doc["failures"]}
    check_outcomes(cases, root, failures, cached(db))
    assert doc["summary"]["files_seen"] == sum(c.expect != "absent" for c in cases) > MANY_FILES
    assert ran.max_rss < MAX_RSS_BYTES, f"peak memory {ran.max_rss / 2**20:.0f} MiB"
    print(f"{len(cases)} files, {len(failures)} failures, peak memory {ran.max_rss / 2**20:.0f} MiB")
    assert snapshot(root) == before
    # the table a person reads: every failure on its own line, odd names escaped, no traceback
    shown = run_ndup("groups", "--db", db)
    assert shown.returncode == 0 and shown.stderr == b""
    for path, reason in failures.items():
        assert any(os.path.basename(path) in line and reason[:40] in line for line in shown.out.splitlines()), path
    assert "new\\nline.jpg" in shown.out and "caf\\xe9.jpg" in shown.out


def test_peak_memory_is_ndups_own_not_the_test_process_that_started_it():
    """The measure behind "memory bounded": a process started by exec inherits the peak of the one it
    replaced, so a test process holding 1 GiB must not make `ndup --version` look that big."""
    held = bytearray(b"\x01") * (1 << 30)  # written, so resident
    ran = run_ndup("--version")
    assert ran.returncode == 0 and held[-1] == 1
    assert 0 < ran.max_rss < 256 * 2**20, f"{ran.max_rss / 2**20:.0f} MiB"


def test_odd_names_survive_json_apply_cache_rebuild_and_undo_byte_for_byte(tmp_path):
    lib = tmp_path / "lib"
    write_odd_names(lib)
    db = tmp_path / "cache/ndup.db"
    fast_scan(lib, db)
    before = contents(lib)
    shown = run_ndup("groups", "--db", db, "--json")
    assert shown.returncode == 0
    [group] = json.loads(shown.out)["groups"]  # valid UTF-8 JSON; bytes that are not UTF-8 as \udcXX escapes
    names = {os.fsencode(m["path"]) for m in group["members"]}
    assert names == {os.fsencode(lib / n) for n in ("names/plain.jpg", *ODD_NAMES.values())}
    assert '"' + os.fsdecode(os.fsencode(lib)) + '/names/caf\\udce9.jpg"' in shown.out
    applied = run_ndup("apply", "--db", db, "--yes", "--log-file", tmp_path / "apply.log")
    assert applied.returncode == 0 and applied.stderr == b"", applied.err
    assert len(applied.out.splitlines()) == len(ODD_NAMES) + 1  # one line per file: newlines in names escaped
    [kept] = contents(lib)  # the keeper, whichever name it has; the others are in the trash
    assert os.fsdecode(kept) in ("names/plain.jpg", *ODD_NAMES.values())
    rebuilt = run_ndup("cache", "rebuild", "--db", db)  # the journal is carried over, names and all
    assert rebuilt.returncode == 0, rebuilt.err
    undone = run_ndup("undo", "--db", db)
    assert undone.returncode == 0, undone.out + undone.err
    assert contents(lib) == before


def test_unreadable_files_and_folders_are_reported(tmp_path, monkeypatch):
    """Permission denied, simulated in-process (as root, chmod 000 stops nothing): the real thing is
    test_real_permissions_and_a_read_only_tree."""
    lib = tmp_path / "lib"
    save(photo(1, 160, 120), lib / "ok.jpg")
    secret = save(photo(2, 160, 120), lib / "secret.jpg")
    locked = lib / "locked"
    save(photo(3, 160, 120), locked / "inside.jpg")
    real_open, real_scandir = os.open, os.scandir

    def deny_open(path, flags, *args, **kw):
        if os.fspath(path) == str(secret):
            raise PermissionError(13, "Permission denied", str(secret))
        return real_open(path, flags, *args, **kw)

    def deny_scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(decode.os, "open", deny_open)
    monkeypatch.setattr(walk_module.os, "scandir", deny_scandir)
    plan = fast_scan(lib, tmp_path / "ndup.db")
    assert set(plan.failures) == {
        Failure(str(secret), "permission denied: ndup cannot read this file"),
        Failure(str(locked), "cannot list folder: Permission denied"),
    }
    assert plan.summary["images"] == 1


def test_real_permissions_and_a_read_only_tree(tmp_path):
    """Real permission bits: an unreadable file, a folder that cannot be listed, one that can be listed
    but not entered; every other folder and file read-only (555 / 444). The scan reports the three and
    writes nothing anywhere in the tree; apply fails, file by file, and changes nothing either."""
    prefix = without_dac_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits cannot be made to apply")
    lib = tmp_path / "lib"
    save(photo(1, 160, 120), lib / "ok.jpg")
    save(photo(1, 160, 120), lib / "sub/copy.jpg")
    save(photo(2, 160, 120), lib / "secret.jpg")
    save(photo(3, 160, 120), lib / "locked/inside.jpg")
    save(photo(4, 160, 120), lib / "noentry/inside.jpg")
    for dirpath, _dirnames, filenames in os.walk(lib):
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o444)
    os.chmod(lib / "secret.jpg", 0)
    modes = {lib / "locked": 0, lib / "noentry": 0o444, lib / "sub": 0o555, lib: 0o555}
    for path, mode in modes.items():
        os.chmod(path, mode)
    try:
        before = snapshot(lib) if os.geteuid() == 0 else None  # root can look inside; others cannot
        db = tmp_path / "cache/ndup.db"
        ran = run_ndup("scan", lib, "--db", db, "--json", "--workers", "1", prefix=prefix)
        assert (ran.returncode, ran.err) == (0, "")
        doc = json.loads(ran.out)
        assert {(f["path"], f["reason"]) for f in doc["failures"]} == {
            (str(lib / "secret.jpg"), "permission denied: ndup cannot read this file"),
            (str(lib / "locked"), "cannot list folder: Permission denied"),
            (str(lib / "noentry/inside.jpg"), "cannot read: Permission denied"),
        }
        [group] = doc["groups"]
        assert {m["path"] for m in group["members"]} == {str(lib / "ok.jpg"), str(lib / "sub/copy.jpg")}
        # apply cannot take a file out of a read-only folder: each one fails with the reason, exit 5
        applied = run_ndup("apply", "--db", db, "--yes", "--json", prefix=prefix)
        assert applied.returncode == 5, applied.err
        [result] = json.loads(applied.out)["results"]
        assert result["state"] == "failed" and "Permission denied" in result["reason"]
        if before is not None:
            assert snapshot(lib) == before
    finally:
        for path in modes:
            os.chmod(path, 0o755)


def test_a_root_on_a_read_only_filesystem(tmp_path):
    """Scanning a read-only mount works; apply there fails each file with the reason, exit 5, and
    leaves nothing behind, neither in the library nor in the trash."""
    mount = private_mount_prefix()
    if mount is None:
        pytest.skip("no private mount namespace here (unshare not allowed)")
    lib, ro = tmp_path / "lib", tmp_path / "ro"
    a = save(photo(1, 160, 120), lib / "a.jpg")
    shutil.copy2(a, lib / "copy.jpg")
    ro.mkdir()
    db = tmp_path / "cache/ndup.db"
    before = contents(lib)
    script = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'
    bind = (*mount, "sh", "-c", script, "sh", str(lib), str(ro))
    ran = run_ndup("scan", ro, "--db", db, "--json", "--workers", "1", prefix=bind)
    assert (ran.returncode, ran.err) == (0, "")
    [group] = json.loads(ran.out)["groups"]
    assert {m["path"] for m in group["members"]} == {str(ro / "a.jpg"), str(ro / "copy.jpg")}
    applied = run_ndup("apply", "--db", db, "--yes", "--json", prefix=bind)
    assert applied.returncode == 5, applied.err
    [result] = json.loads(applied.out)["results"]
    assert result["state"] == "failed" and "Read-only file system" in result["reason"]
    assert contents(lib) == before
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    assert not (trash / "files").exists() or list((trash / "files").iterdir()) == []
    assert not (trash / "info").exists() or list((trash / "info").iterdir()) == []


def test_files_changed_between_the_walk_and_the_read(tmp_path, monkeypatch):
    """After the walk saw them: one file deleted, one rewritten (other size, time and bytes), one
    replaced by a named pipe. The deleted one is reported, the rewritten one cached as it was read,
    and the pipe neither hangs the scan nor is read."""
    lib = tmp_path / "lib"
    for seed, name in enumerate(("keep", "gone", "rewritten", "piped")):
        save(photo(seed, 160, 120), lib / f"{name}.jpg")
    real_walk = scan_module.walk

    def walk_then_change(*args, **kw):
        yield from real_walk(*args, **kw)
        (lib / "gone.jpg").unlink()
        save(photo(50, 320, 240), lib / "rewritten.jpg")
        os.utime(lib / "rewritten.jpg", ns=(10**18, 10**18))
        (lib / "piped.jpg").unlink()
        os.mkfifo(lib / "piped.jpg")

    monkeypatch.setattr(scan_module, "walk", walk_then_change)
    db = tmp_path / "ndup.db"
    plan = fast_scan(lib, db)
    assert set(plan.failures) == {
        Failure(str(lib / "gone.jpg"), "the file disappeared during the scan"),
        Failure(str(lib / "piped.jpg"), "not a regular file any more (replaced since the scan found it)"),
    }
    with Store.open(db) as store:
        [rec] = store.image_records([str(lib / "rewritten.jpg")])
    st = os.stat(lib / "rewritten.jpg")
    assert (rec.size, rec.mtime_ns, rec.facts.width) == (st.st_size, 10**18, 320)
    assert rec.facts.content_hash == decode.hashlib.sha256((lib / "rewritten.jpg").read_bytes()).hexdigest()
    monkeypatch.undo()
    again = fast_scan(lib, db)
    assert again.summary["decoded"] == 0 and again.summary["images"] == 2  # the rewrite was cached as read
    assert {f.path for f in again.failures} == set()  # the pipe is no file of the library; gone is gone


def test_worker_processes_that_die_are_replaced_and_results_keep_their_order():
    from harness import double_unless_cursed

    from ndup.workers import ordered_map

    out = list(ordered_map(double_unless_cursed, range(40), workers=2, in_flight=6, crashed=lambda x: ("died", x)))
    assert out == [("died", x) if x % 10 == 7 else 2 * x for x in range(40)]
    with pytest.raises(BrokenProcessPool):
        list(ordered_map(double_unless_cursed, range(10), workers=2))


def test_a_file_that_crashes_its_decoder_is_reported_and_the_scan_goes_on(tmp_path, monkeypatch):
    from harness import analyze_or_crash

    lib = tmp_path / "lib"
    for i in range(6):
        save(photo(40 + i, 120, 90), lib / f"p{i}.jpg")
    save(photo(50, 120, 90), lib / "crash-me.jpg")
    save(photo(51, 120, 90), lib / "sub/crash-me too.png")
    monkeypatch.setattr(scan_module, "analyze", analyze_or_crash)
    db = tmp_path / "ndup.db"
    plan = fast_scan(lib, db, workers=2)
    reason = "the decoder crashed on this file (its worker process died); it is skipped until it changes"
    assert set(plan.failures) == {
        Failure(str(lib / "crash-me.jpg"), reason),
        Failure(str(lib / "sub/crash-me too.png"), reason),
    }
    assert plan.summary["images"] == 6
    again = fast_scan(lib, db, workers=2)
    assert again.summary["decoded"] == 0 and len(again.failures) == 2


def test_worker_processes_that_cannot_start_stop_the_scan_without_blaming_a_file(tmp_path, monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from harness import die, double_unless_cursed

    from ndup import workers
    from ndup.errors import NdupError

    def dying_pool(n):
        return ProcessPoolExecutor(n, mp_context=workers._context(), initializer=die)

    monkeypatch.setattr(workers, "worker_pool", dying_pool)
    with pytest.raises(BrokenProcessPool):
        list(workers.ordered_map(double_unless_cursed, range(10), workers=2, crashed=lambda x: ("died", x)))
    save(photo(1, 120, 90), tmp_path / "lib/a.jpg")
    with pytest.raises(NdupError, match="the worker processes that read files cannot run"):
        fast_scan(tmp_path / "lib", tmp_path / "ndup.db", workers=2)
    with Store.open(tmp_path / "ndup.db") as store:
        assert store.cached_stats() == {}  # no file was blamed


def test_review_shows_odd_names_escaped_and_saves_decisions_for_them(tmp_path):
    from test_review import drive  # the pilot helper of the review tests

    from ndup.decisions import views

    lib = tmp_path / "lib"
    write_odd_names(lib)
    db = tmp_path / "ndup.db"
    fast_scan(lib, db)
    latin1 = str(lib / ODD_NAMES["latin1"])
    with Store.open(db) as store:
        [view] = [v for v in views(store.load_plan(), store) if v.group.tier != "similar"]
        index = [m.path for m in view.members].index(latin1)
        screens: list[str] = []
        drive(store, *["right"] * index, "k", "a", screen=screens, size=(120, 30))
        [view] = [v for v in views(store.load_plan(), store) if v.group.tier != "similar"]
    assert (view.status, view.keep) == ("accepted", latin1)
    assert "caf\\xe9.jpg" in screens[0] and "\udce9" not in screens[0]
