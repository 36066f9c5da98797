"""ndup apply / undo end to end: a real tree, a real scan, each action, then undo; nothing is ever lost."""

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import make_thirty, make_tree, photo, save, scan

from ndup import apply as apply_mod
from ndup import decisions
from ndup.apply import ApplyOptions, run_apply, run_undo
from ndup.decisions import accept, choose_keeper, views
from ndup.lock import cache_lock
from ndup.store import Store


def ndup(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "ndup", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """relative path -> (kind, sha256) for everything under root; kind tells links from files."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = ("symlink", os.readlink(p))
        elif p.is_file():
            kind = "file" if p.stat().st_nlink == 1 else f"hardlink{p.stat().st_nlink}"
            out[str(p.relative_to(root))] = (kind, sha(p))
    return out


def out(verb: str, text: str) -> str:
    """A line of apply's output, as a person reads it."""
    return f"{verb:<15} {text}"


def trash_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "Trash"


@pytest.fixture
def scanned(dup_tree):
    lib, db = dup_tree
    store = Store.open(db)
    try:
        plan = store.load_plan()
    finally:
        store.close()
    assert [(g.tier, Path(g.keep).name, sorted(Path(m.path).name for m in g.members)) for g in plan.groups] == [
        ("copy", "a.jpg", ["a.jpg", "a.jpg", "a_small.jpg"]),
        ("exact", "b.png", ["b.png", "b_copy.png"]),
    ]
    return lib, db


GONE = {"backup/a.jpg", "export/a_small.jpg", "b_copy.png"}


@pytest.mark.parametrize(
    "args,expect",
    [
        ([], {"trash": GONE}),
        (["--move-to", "{moved}"], {"moved": GONE}),
        (["--hardlink"], {"links": {"backup/a.jpg": "a.jpg", "b_copy.png": "b.png"}}),
        (["--symlink"], {"links": {"backup/a.jpg": "a.jpg", "b_copy.png": "b.png"}}),
        (["--delete"], {"deleted": GONE}),
    ],
    ids=["trash", "move", "hardlink", "symlink", "delete"],
)
def test_each_action_then_undo(scanned, tmp_path, args, expect):
    lib, db = scanned
    before = tree(lib)
    moved = tmp_path / "moved"
    args = [a.format(moved=moved) for a in args]
    r = ndup("apply", "--db", db, "--yes", *args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    after = tree(lib)
    gone = expect.get("trash") or expect.get("moved") or expect.get("deleted") or set()
    assert set(after) == set(before) - gone
    for rel in set(after) - set(expect.get("links", {})):
        assert after[rel][1] == before[rel][1], rel  # every survivor has its bytes (keepers may gain links)
    if "trash" in expect:
        trashed = {sha(p) for p in (trash_dir() / "files").iterdir()}
        assert trashed == {before[rel][1] for rel in gone}
        infos = [p.read_text() for p in (trash_dir() / "info").iterdir()]
        assert sorted(line for i in infos for line in i.splitlines() if line.startswith("Path=")) == sorted(
            f"Path={lib / rel}" for rel in gone
        )
    if "moved" in expect:
        assert {rel: v for rel, v in tree(moved).items()} == {rel: before[rel] for rel in gone}
    for dup, keeper in expect.get("links", {}).items():
        if "--hardlink" in args:
            assert os.path.samefile(lib / dup, lib / keeper) and not (lib / dup).is_symlink()
        else:
            assert os.readlink(lib / dup) == str(lib / keeper)
    if "links" in expect:  # the copy with different bytes is never replaced by a link
        [small] = [x for x in doc["results"] if x["path"].endswith("a_small.jpg")]
        assert small["state"] == "skipped" and "bytes differ" in small["reason"]
        assert after["export/a_small.jpg"] == before["export/a_small.jpg"]
    assert doc["summary"]["failed"] == 0 and doc["apply_id"] == 1

    u = ndup("undo", "--db", db)
    if "deleted" in expect:
        assert u.returncode == 5 and "deleted permanently" in u.stdout
        return
    assert u.returncode == 0, u.stdout + u.stderr
    assert tree(lib) == before  # every file back, as a regular file with its own bytes
    if "trash" in expect:
        assert list((trash_dir() / "files").iterdir()) == [] and list((trash_dir() / "info").iterdir()) == []
    [run] = json.loads(ndup("history", "--db", db, "--json").stdout)["apply_runs"]
    assert (run["id"], run["status"], run["summary"]["done"]) == (1, "undone", len(gone) or 2)


def test_dry_run_prints_exactly_what_would_happen_and_changes_nothing(scanned, tmp_path):
    lib, db = scanned
    before = tree(lib)
    r = ndup("apply", "--db", db, "--yes", "--dry-run", "--move-to", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert out("would move", f"{lib}/backup/a.jpg -> {tmp_path}/m/backup/a.jpg") in lines
    assert out("would move", f"{lib}/b_copy.png -> {tmp_path}/m/b_copy.png") in lines
    assert lines[-1] == "dry run: would move 3 files (" + lines[-1].split("(")[1]
    assert tree(lib) == before and not (tmp_path / "m").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    inside = ndup("apply", "--db", db, "--yes", "--dry-run", "--move-to", lib / "dups")
    assert inside.returncode == 2 and f"--move-to {lib}/dups is inside the scanned folder {lib}" in inside.stderr


def test_files_changed_after_the_scan_are_skipped(scanned):
    lib, db = scanned
    with open(lib / "backup/a.jpg", "ab") as f:  # grown: size and time differ
        f.write(b"\0")
    data = bytearray((lib / "b_copy.png").read_bytes())  # same size and time, other bytes
    st = os.stat(lib / "b_copy.png")
    data[-20] ^= 0xFF
    (lib / "b_copy.png").write_bytes(bytes(data))
    os.utime(lib / "b_copy.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    before = tree(lib)
    r = ndup("apply", "--db", db, "--yes")
    assert r.returncode == 0, r.stderr
    assert out("skipped", f"{lib}/backup/a.jpg: changed since the scan (size or modification time differs") in r.stdout
    assert out("skipped", f"{lib}/b_copy.png: changed since the scan (its contents differ") in r.stdout
    assert out("trashed", f"{lib}/export/a_small.jpg  (kept {lib}/a.jpg)") in r.stdout
    assert tree(lib) == {k: v for k, v in before.items() if k != "export/a_small.jpg"}


def test_a_changed_keeper_protects_its_whole_group(scanned):
    lib, db = scanned
    os.utime(lib / "a.jpg", ns=(1, 1))
    r = ndup("apply", "--db", db, "--yes")
    assert r.returncode == 0
    assert r.stdout.count(f"its keeper {lib}/a.jpg changed since the scan") == 2
    assert (lib / "backup/a.jpg").exists() and (lib / "export/a_small.jpg").exists()
    assert not (lib / "b_copy.png").exists()


def test_protected_folders_from_flag_and_config_are_never_touched(scanned):
    lib, db = scanned
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ndup/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[scan]\nprotect = ["{lib / "backup"}"]\n')
    r = ndup("apply", "--db", db, "--yes", "--protect", lib / "export", "--json")
    assert r.returncode == 0, r.stderr
    states = {
        Path(x["path"]).relative_to(lib).as_posix(): (x["state"], x["reason"]) for x in json.loads(r.stdout)["results"]
    }
    assert states == {
        "backup/a.jpg": ("skipped", f"protected (under {lib / 'backup'})"),
        "export/a_small.jpg": ("skipped", f"protected (under {lib / 'export'})"),
        "b_copy.png": ("done", ""),
    }


def test_max_delete_refuses_before_touching_anything(scanned):
    lib, db = scanned
    before = tree(lib)
    r = ndup("apply", "--db", db, "--yes", "--max-delete", "2")
    assert r.returncode == 4
    assert r.stderr.startswith(
        "ndup: error: the plan would trash 3 files, more than --max-delete 2; nothing was touched"
    )
    assert tree(lib) == before


def test_without_yes_only_accepted_groups_act_and_decisions_win(scanned):
    lib, db = scanned
    r = ndup("apply", "--db", db)
    assert r.returncode == 0 and "no group has been accepted in `ndup review` yet" in r.stderr
    assert len(tree(lib)) == 6
    store = Store.open(db)
    try:
        plan = store.load_plan()
        copy_group, exact_group = views(plan, store)
        # as in review: keep the backup instead of a.jpg, then accept; mark the exact pair "not duplicates"
        decisions.save(store, plan.run_id, copy_group, choose_keeper(copy_group, str(lib / "backup/a.jpg")))
        decisions.mark_not_duplicates(store, plan.run_id, exact_group)
        copy_group, exact_group = views(plan, store)
        assert copy_group.keep == str(lib / "backup/a.jpg") and copy_group.status == "open"
        decisions.save(store, plan.run_id, copy_group, accept(copy_group))
    finally:
        store.close()
    r = ndup("apply", "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    done = sorted(Path(x["path"]).relative_to(lib).as_posix() for x in json.loads(r.stdout)["results"])
    assert done == ["a.jpg", "export/a_small.jpg"]
    assert sorted(tree(lib)) == ["b.png", "b_copy.png", "backup/a.jpg", "c.jpg"]
    # with --yes too, the "not duplicates" group stays as it is
    r = ndup("apply", "--db", db, "--yes", "--json")
    assert r.returncode == 0
    assert [(x["state"], x["reason"]) for x in json.loads(r.stdout)["results"]] == [
        ("already", "already trashed by apply run 1")
    ] * 2
    assert sorted(tree(lib)) == ["b.png", "b_copy.png", "backup/a.jpg", "c.jpg"]


def test_a_second_concurrent_run_is_refused(scanned):
    lib, db = scanned
    with cache_lock(db):
        for args in (["apply", "--yes"], ["undo"], ["scan", lib]):
            r = ndup(*args, "--db", db)
            assert r.returncode == 3, (args, r.stderr)
            assert r.stderr.strip() == (
                f"ndup: error: another ndup run is using {db} (pid {os.getpid()}) "
                "(hint: wait for it to finish; a crashed run releases the lock by itself)"
            )
    assert ndup("apply", "--db", db, "--yes").returncode == 0


def test_a_crash_between_the_two_steps_of_a_move_is_finished_on_resume(scanned, monkeypatch):
    lib, db = scanned
    before = tree(lib)
    real = apply_mod._fsync_dir
    calls = []

    def crash_once(path):
        calls.append(path)
        if len(calls) == 1:  # right after the file got its new name, before the old one is removed
            raise KeyboardInterrupt
        real(path)

    monkeypatch.setattr(apply_mod, "_fsync_dir", crash_once)
    store = Store.open(db)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_apply(store, ApplyOptions(yes=True))
        [entry] = store.journal(1)
        assert entry.state == "planned" and os.path.exists(entry.src) and os.path.samefile(entry.src, entry.dest)
        report = run_apply(store, ApplyOptions(yes=True))
        assert report.resumed and report.apply_id == 1 and "was interrupted" in report.recovered[0]
        assert [e.state for e in store.journal(1)] == ["done", "done", "done"]
        assert sorted(tree(lib)) == ["a.jpg", "b.png", "c.jpg"]
        run_undo(store, None)
    finally:
        store.close()
    assert tree(lib) == before


def test_a_crash_before_the_move_cancels_the_entry_and_its_trash_slot(scanned, monkeypatch):
    lib, db = scanned
    before = tree(lib)

    def crash(*args):
        raise KeyboardInterrupt

    store = Store.open(db)
    try:
        with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
            m.setattr(apply_mod, "move_file", crash)
            run_apply(store, ApplyOptions(yes=True))
        assert len(list((trash_dir() / "info").iterdir())) == 1  # the slot was claimed
        apply_mod.recover(store)
        [entry] = store.journal(1)
        assert (entry.state, entry.reason) == ("cancelled", "interrupted before the file was touched")
        assert list((trash_dir() / "info").iterdir()) == []
    finally:
        store.close()
    assert tree(lib) == before


def test_moves_across_filesystems_copy_verify_and_never_overwrite(tmp_path, monkeypatch):
    src = tmp_path / "a/x.jpg"
    save(photo(5, 64, 48), src)
    os.utime(src, ns=(10**18, 10**18))
    digest = sha(src)
    real_link = os.link

    def no_cross_device_links(a, b, **kw):
        if str(a) == str(src):
            raise OSError(18, "Invalid cross-device link")  # EXDEV
        return real_link(a, b, **kw)

    monkeypatch.setattr(os, "link", no_cross_device_links)
    dest = tmp_path / "b/x.jpg"
    apply_mod.move_file(str(src), str(dest), str(tmp_path / "b/.tmp"), digest)
    assert not src.exists() and sha(dest) == digest and dest.stat().st_mtime_ns == 10**18
    assert sorted(os.listdir(tmp_path / "b")) == ["x.jpg"]
    src.write_bytes(b"other")
    with pytest.raises(FileExistsError):
        apply_mod.move_file(str(src), str(dest), str(tmp_path / "b/.tmp"), sha(src))
    assert sha(dest) == digest and src.read_bytes() == b"other"


# ---- kill -9 in the middle ---------------------------------------------------------------------------


@pytest.fixture
def thirty(tmp_path):
    """30 files: 10 photos, each with two identical copies elsewhere (20 files to trash)."""
    lib = make_thirty(tmp_path / "lib")
    db = tmp_path / "cache/ndup.db"
    plan = scan(lib, db)
    assert len(plan.groups) == 10 and plan.summary["to_delete"] == 20
    return lib, db, sorted(Path(g.keep).relative_to(lib).as_posix() for g in plan.groups)


def _kill_apply_midway(db: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ndup", "apply", "--yes", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NDUP_TEST_ACTION_DELAY": "0.05"},
    )
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                done = conn.execute("SELECT count(*) FROM journal WHERE state = 'done'").fetchone()[0]
        except sqlite3.OperationalError:
            done = 0  # tables not there yet
        if done >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "apply finished before it could be killed"
    assert 6 <= done < 20


def test_kill_9_during_apply_then_undo_loses_nothing(thirty):
    lib, db, _ = thirty
    before = tree(lib)
    _kill_apply_midway(db)
    assert len(tree(lib)) < 30
    r = ndup("undo", "--db", db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "apply run 1 was interrupted" in r.stderr
    assert tree(lib) == before
    assert list((trash_dir() / "files").iterdir()) == [] and list((trash_dir() / "info").iterdir()) == []
    with sqlite3.connect(db) as conn:
        states = {s for (s,) in conn.execute("SELECT state FROM journal")}
    assert states <= {"undone", "cancelled"}


def test_kill_9_during_apply_then_resume_finishes_the_plan(thirty):
    lib, db, keepers = thirty
    before = tree(lib)
    _kill_apply_midway(db)
    r = ndup("apply", "--yes", "--db", db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "apply run 1 (resumed): trashed" in r.stdout
    assert sorted(tree(lib)) == keepers
    trashed = sorted(sha(p) for p in (trash_dir() / "files").iterdir())
    assert trashed == sorted(v[1] for k, v in before.items() if k not in keepers)
    assert len(list((trash_dir() / "info").iterdir())) == 20
    assert ndup("undo", "--db", db).returncode == 0
    assert tree(lib) == before


# ---- cron ----------------------------------------------------------------------------------------------


def test_scan_apply_yes_runs_unattended_with_a_cap_and_a_log(tmp_path):
    lib = make_tree(tmp_path)
    db, log = tmp_path / "cache/ndup.db", tmp_path / "logs/ndup.log"
    before = tree(lib)
    r = ndup("scan", lib, "--db", db, "--apply", "--yes", "--max-delete", "1", "--json", "--log-file", log)
    assert r.returncode == 4 and tree(lib) == before
    assert "more than --max-delete 1; nothing was touched" in r.stderr and r.stdout == ""
    r = ndup("scan", lib, "--db", db, "--apply", "--yes", "--action", "trash", "--max-delete", "5", "--json",
             "--log-file", log)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["summary"]["to_delete"] == 3 and doc["apply"]["summary"]["done"] == 3
    assert sorted(tree(lib)) == ["a.jpg", "b.png", "c.jpg"]
    text = log.read_text()
    assert "error: the plan would trash 3 files" in text and f"done {lib}/b_copy.png" in text
    assert "apply run 1 finished" in text


def test_a_file_on_another_filesystem_goes_to_that_filesystems_trash(tmp_path):
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no writable /dev/shm on another filesystem")
    volume_trash = shm / f".Trash-{os.getuid()}"
    existed = volume_trash.exists()
    lib = Path(tempfile.mkdtemp(prefix="ndup-test-", dir=shm))
    try:
        a = save(photo(7, 160, 120), lib / "a.jpg")
        shutil.copy2(a, lib / "z.jpg")
        db = tmp_path / "ndup.db"
        scan(lib, db)
        before = tree(lib)
        store = Store.open(db)
        try:
            [result] = run_apply(store, ApplyOptions(yes=True)).results
            assert result.state == "done" and Path(result.dest).parent == volume_trash / "files"
            info = Path(store.journal(1)[0].extra).read_text()
            assert f"Path={lib.name}/z.jpg\n" in info  # relative to the top of that filesystem, as the spec says
            assert not (trash_dir() / "files").exists() or not list((trash_dir() / "files").iterdir())
            run_undo(store, None)
        finally:
            store.close()
        assert tree(lib) == before
    finally:
        shutil.rmtree(lib, ignore_errors=True)
        if not existed:
            shutil.rmtree(volume_trash, ignore_errors=True)
