"""Crashes at any moment, a damaged cache, a full disk, two runs at once (issue 7): nothing is lost,
the cache stays sound, every failure is one clear line.

Kill points are drawn from seeded random numbers: 3 seeds each in CI, many more with
NDUP_HARDENING=long (docs/reliability.md).
"""

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import make_thirty, make_tree, photo, save, scan
from harness import LONG, contents, ndup_command, one_error_line, pixel_embedder, private_mount_prefix, run_ndup
from PIL import Image

from ndup import store as store_module
from ndup.config import ScanSettings
from ndup.errors import NdupError
from ndup.lock import lock_path
from ndup.scan import run_scan
from ndup.store import Store

SCAN_SEEDS = range(25) if LONG else range(3)
CTRL_C_SEEDS = range(100, 110) if LONG else range(100, 101)
APPLY_SEEDS = range(40) if LONG else range(3)


def integrity(db: Path) -> list:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def count(db: Path, sql: str) -> int:
    """A number from the cache while another process writes it (0 while the table is not there yet)."""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def kill_when(proc: subprocess.Popen, ready, extra: float, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to `proc` `extra` seconds after `ready()` first holds (or after it has ended by itself)."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.002)
    time.sleep(extra)
    proc.send_signal(sig)
    proc.wait(timeout=60)


CTRL_C = "ndup: interrupted; everything finished so far is saved, and the next run carries on from there\n"


def by_content(plan) -> list:
    """A plan's groups as sets of files, whatever their ids and order."""
    return sorted((g.tier, sorted(m.path for m in g.members)) for g in plan.groups)


# ---- kill -9 during a scan -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killable(tmp_path_factory):
    """A library of 24 images (20 photos, two identical copies, a half-size and a re-encoded copy) and a
    damaged file, and its plan from a scan nobody interrupted."""
    root = tmp_path_factory.mktemp("killable") / "lib"
    for i in range(20):
        save(photo(600 + i, 200, 150), root / f"photos/p{i:02d}.jpg", quality=90)
    (root / "copies").mkdir()
    shutil.copy2(root / "photos/p00.jpg", root / "copies/p00.jpg")
    shutil.copy2(root / "photos/p01.jpg", root / "copies/p01.jpg")
    save(photo(602, 200, 150).resize((100, 75), Image.LANCZOS), root / "copies/p02_small.jpg", quality=90)
    save(photo(603, 200, 150), root / "copies/p03.png")
    (root / "broken.jpg").write_bytes((root / "photos/p04.jpg").read_bytes()[:900])
    clean = scan(root, tmp_path_factory.mktemp("clean") / "ndup.db", batch_size=4)
    assert clean.summary["images"] == 24 and len(clean.failures) == 1
    return root, clean


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed,sig",
    [pytest.param(s, signal.SIGKILL, id=f"KILL-{s}") for s in SCAN_SEEDS]
    + [pytest.param(s, signal.SIGINT, id=f"INT-{s}") for s in CTRL_C_SEEDS],
)
def test_kill_9_or_ctrl_c_during_a_scan_then_the_next_scan_resumes(killable, tmp_path, seed, sig):
    lib, clean = killable
    rng = random.Random(seed)
    # when to kill: as soon as the cache file appears (opening, migrating, loading the network), or once
    # `target` images are in the cache, then a random moment later (inside a batch, a commit, the plan)
    target = rng.choice([0, 0, *range(1, 24)])
    extra = rng.uniform(0, 0.1)
    db = tmp_path / "cache/ndup.db"
    proc = subprocess.Popen(
        ndup_command("scan", lib, "--db", db, "--workers", "1", "--batch-size", "4", "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    images = "SELECT count(*) FROM files WHERE kind = 'image'"
    kill_when(proc, lambda: db.exists() and (target == 0 or count(db, images) >= target), extra, sig)
    if sig == signal.SIGINT and proc.returncode != 0:  # Ctrl-C: one line, exit 130
        assert (proc.returncode, proc.stderr.read().decode()) == (130, CTRL_C)
    assert integrity(db) == [("ok",)]
    kept = count(db, "SELECT count(*) FROM files WHERE kind = 'image'")
    resumed = scan(lib, db, batch_size=4)
    assert resumed.summary["decoded"] == 24 - kept  # what the killed scan finished is not read again
    assert by_content(resumed) == by_content(clean)
    assert {f.path for f in resumed.failures} == {f.path for f in clean.failures}
    assert integrity(db) == [("ok",)]
    when = "after it finished" if proc.returncode == 0 else "mid-scan"
    print(f"seed {seed} {signal.Signals(sig).name}: {when}, {kept}/24 images kept")


@pytest.mark.slow
def test_ctrl_c_once_the_plan_is_saved_ends_with_the_commands_own_status(tmp_path):
    """After the plan is saved only Python's teardown is left (up to a second, freeing torch), during which
    Python puts Ctrl-C back to the default: ndup used to die of the signal there, silently (found by the
    long run's Ctrl-C seeds 103 and 106). Now the command's own status stands, or its Ctrl-C line."""
    lib, db = make_tree(tmp_path), tmp_path / "cache/ndup.db"
    proc = subprocess.Popen(
        ndup_command("scan", lib, "--db", db, "--workers", "1", "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    saved = "SELECT count(*) FROM runs WHERE status = 'done'"
    # 0.2 s later: before the fix, every delay from 0.03 to 0.33 s tried died of the signal
    kill_when(proc, lambda: count(db, saved) > 0, 0.2, signal.SIGINT)
    assert (proc.returncode, proc.stderr.read().decode()) in ((0, ""), (130, CTRL_C))
    assert integrity(db) == [("ok",)]


def test_an_interrupted_migration_leaves_a_cache_the_next_run_can_open(tmp_path, monkeypatch):
    """A crash while the cache is created or upgraded: each migration is one transaction."""
    db = tmp_path / "ndup.db"

    def dies(database):
        database["half_made"].create({"x": int})
        raise KeyboardInterrupt  # what a kill looks like from inside: nothing after this point runs

    dying = store_module.migrations._migrations[-1]
    monkeypatch.setattr(dying, "fn", dies)
    with pytest.raises(KeyboardInterrupt):
        Store.open(db)
    monkeypatch.undo()
    with Store.open(db) as store:
        assert store.schema_version == len(store_module.migrations._migrations)
        assert "half_made" not in store.db.table_names()
    assert integrity(db) == [("ok",)]


# ---- kill -9 during apply ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thirty_template(tmp_path_factory):
    """10 photos, each with two identical copies elsewhere (20 files to trash), scanned once; and a
    pristine copy of the tree (bytes and times) to restore it from for every test."""
    base = tmp_path_factory.mktemp("thirty")
    lib = make_thirty(base / "lib", seed=700)
    plan = scan(lib, base / "template.db")
    assert len(plan.groups) == 10 and plan.summary["to_delete"] == 20
    shutil.copytree(lib, base / "pristine", copy_function=shutil.copy2)
    return lib, base / "pristine", base / "template.db"


@pytest.fixture
def thirty(thirty_template, tmp_path):
    lib, pristine, template_db = thirty_template
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(pristine, lib, copy_function=shutil.copy2)
    db = tmp_path / "cache/ndup.db"
    db.parent.mkdir(parents=True)
    shutil.copy2(template_db, db)
    return lib, db


@pytest.mark.slow
@pytest.mark.parametrize("seed", APPLY_SEEDS)
def test_kill_9_during_apply_at_random_points_then_undo_restores_every_byte(thirty, seed):
    lib, db = thirty
    before = contents(lib)
    rng = random.Random(1000 + seed)
    target, extra = rng.randrange(0, 20), rng.uniform(0, 0.05)
    proc = subprocess.Popen(
        ndup_command("apply", "--yes", "--db", db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NDUP_TEST_ACTION_DELAY": "0.01"},
    )
    done, started = "SELECT count(*) FROM journal WHERE state = 'done'", "SELECT count(*) FROM journal"
    kill_when(proc, lambda: count(db, started) > 0 and count(db, done) >= target, extra)
    assert integrity(db) == [("ok",)]
    print(f"seed {seed}: killed with {count(db, done)} of 20 files done, {'resume then undo' if seed % 2 else 'undo'}")
    if seed % 2:  # carry on first, then undo everything
        resumed = run_ndup("apply", "--yes", "--db", db)
        assert resumed.returncode == 0, resumed.err
        assert len(contents(lib)) == 10
    undone = run_ndup("undo", "--db", db)
    assert undone.returncode == 0 or "nothing to undo" in undone.err, undone.out + undone.err
    assert contents(lib) == before
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    for sub in ("files", "info"):
        assert not (trash / sub).exists() or list((trash / sub).iterdir()) == []
    assert integrity(db) == [("ok",)]


# ---- a damaged cache -----------------------------------------------------------------------------------

DAMAGED = f"(hint: {store_module.DAMAGED_HINT})"


def test_a_file_that_is_no_cache_is_refused_by_every_command_and_left_alone(dup_tree, tmp_path):
    lib, _ = dup_tree
    db = tmp_path / "other/ndup.db"
    db.parent.mkdir()
    garbage = random.Random(5).randbytes(20_000)
    db.write_bytes(garbage)
    for args in (["scan", lib], ["groups"], ["apply", "--yes"], ["undo"], ["history"], ["apply", "--dry-run"]):
        ran = run_ndup(*args, "--db", db)
        assert ran.returncode == 1, (args, ran.err)
        assert one_error_line(ran) == f"ndup: error: the cache {db} is damaged (file is not a database) {DAMAGED}"
    assert db.read_bytes() == garbage


def _overwrite_pages(db: Path, pages: list[int], seed: int) -> None:
    with closing(sqlite3.connect(db)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(rng.randbytes(size))


def test_a_cache_damaged_in_the_middle(dup_tree):
    """The middle third of the file overwritten: scan, apply and undo check the cache first and refuse
    it; commands that only read it either still work or say the same."""
    lib, db = dup_tree
    before = contents(lib)
    n_pages = db.stat().st_size // 4096
    _overwrite_pages(db, list(range(n_pages // 3 + 1, 2 * n_pages // 3 + 1)), seed=1)
    for args in (["scan", lib], ["apply", "--yes"], ["undo"]):
        ran = run_ndup(*args, "--db", db)
        assert ran.returncode == 1, (args, ran.out, ran.err)
        line = one_error_line(ran)
        assert line.startswith(f"ndup: error: the cache {db} is damaged (database disk image is malformed")
        assert line.endswith(DAMAGED)
    for args in (["groups"], ["history"]):
        ran = run_ndup(*args, "--db", db)
        assert ran.returncode == 0 or one_error_line(ran).endswith(DAMAGED), (args, ran.err)
    assert contents(lib) == before


def test_after_cache_rebuild_undo_puts_back_what_an_earlier_apply_moved_and_scans_work(dup_tree):
    """What the damaged-cache message tells a person to do, done: `ndup cache rebuild` keeps the old
    file aside byte for byte, carries the apply journal over, and then undo and scan work again."""
    lib, db = dup_tree
    before = contents(lib)
    applied = run_ndup("apply", "--yes", "--db", db)
    assert applied.returncode == 0 and len(contents(lib)) == 3, applied.err
    # what fills a real cache and so takes most damage: the facts and vectors of every photo (damage to
    # the small tables of decisions and journal makes rebuild ask for --force: test_cache.py)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        bulk = "SELECT pageno FROM dbstat WHERE name IN ('files', 'embeddings') AND pagetype = 'leaf'"
        pages = [page for (page,) in conn.execute(bulk)]
    assert len(pages) > 1
    _overwrite_pages(db, pages, seed=3)
    damaged = db.read_bytes()
    refused = run_ndup("undo", "--db", db)
    assert refused.returncode == 1 and one_error_line(refused).endswith(DAMAGED)
    rebuilt = run_ndup("cache", "rebuild", "--db", db)
    assert rebuilt.returncode == 0, rebuilt.err
    [backup] = db.parent.glob("ndup.db.bak-*")
    assert backup.read_bytes() == damaged
    undone = run_ndup("undo", "--db", db)
    assert undone.returncode == 0, undone.out + undone.err
    assert contents(lib) == before
    rescan = run_ndup("scan", lib, "--db", db, "--json", "--workers", "1")
    assert rescan.returncode == 0 and rescan.err == "", rescan.err
    assert len(json.loads(rescan.out)["groups"]) == 2
    assert integrity(db) == [("ok",)]


def test_a_cache_damaged_everywhere_but_its_first_page(dup_tree):
    _, db = dup_tree
    _overwrite_pages(db, list(range(2, db.stat().st_size // 4096 + 1)), seed=2)
    for args in (["groups"], ["history"], ["groups", "--json"]):
        ran = run_ndup(*args, "--db", db)
        assert ran.returncode == 1 and one_error_line(ran).endswith(DAMAGED), (args, ran.err)


# ---- a full disk -----------------------------------------------------------------------------------------


def test_a_full_disk_while_the_scan_writes_its_cache(tmp_path, monkeypatch):
    """SQLite says "database or disk is full" on the third batch: one clear error, the cache is sound,
    the two batches written before are kept and the next scan carries on from there."""
    lib = tmp_path / "lib"
    for i in range(12):
        save(photo(800 + i, 120, 90), lib / f"p{i:02d}.jpg")
    db = tmp_path / "cache/ndup.db"
    real_execute = store_module._Connection.execute
    inserts = []

    def execute(self, sql, parameters=(), /):
        if re.match(r"INSERT OR REPLACE INTO .?files\b", sql):  # a batch of file facts
            inserts.append(sql)
            if len(inserts) == 3:
                raise sqlite3.OperationalError("database or disk is full")
        return real_execute(self, sql, parameters)

    monkeypatch.setattr(store_module._Connection, "execute", execute)
    settings = ScanSettings(roots=(lib,), db_path=db, workers=1, batch_size=4)
    with pytest.raises(NdupError) as err:
        run_scan(settings, embedder_factory=pixel_embedder)
    assert str(err.value) == (
        f"the disk holding the cache {db} is full (database or disk is full); everything saved before this "
        "point is kept (hint: free some space or put the cache elsewhere with --db PATH, then run the command again)"
    )
    monkeypatch.undo()
    assert integrity(db) == [("ok",)]
    assert count(db, "SELECT count(*) FROM files") == 8
    assert count(db, "SELECT count(*) FROM runs WHERE status = 'done'") == 0
    again = run_scan(settings, embedder_factory=pixel_embedder)
    assert again.summary["decoded"] == 4 and again.summary["images"] == 12


def test_a_really_full_disk(tmp_path):
    """The cache on a tiny tmpfs that fills up during the scan (where this test may mount one)."""
    mount = private_mount_prefix()
    if mount is None:
        pytest.skip("no private mount namespace here (unshare not allowed)")
    lib = tmp_path / "lib"
    for i in range(60):
        save(photo(900 + i, 160, 120), lib / f"p{i:02d}.jpg")
    small = tmp_path / "small"
    small.mkdir()
    db = small / "ndup.db"
    # in its own mount namespace: a tmpfs on `small`, the scan, then the cache copied out for a look
    script = 'd="$1"; shift; mount -t tmpfs -o size=$TMPFS tmpfs "$d" || exit 99; "$@"; rc=$?; cp -a "$d" "$d.after"; exit $rc'
    ran = run_ndup("scan", lib, "--db", db, "--workers", "1", "--batch-size", "4", "--quiet",
                   prefix=(*mount, "sh", "-c", script, "sh", str(small)), env={"TMPFS": "400k"})  # fmt: skip
    assert ran.returncode == 1, ran.out + ran.err
    line = one_error_line(ran)
    assert line.startswith(f"ndup: error: the disk holding the cache {db} is full (database or disk is full)")
    after = tmp_path / "small.after/ndup.db"
    assert integrity(after) == [("ok",)]
    assert 0 < count(after, "SELECT count(*) FROM files") < 60  # the batches written before the disk filled


# ---- two runs at once --------------------------------------------------------------------------------------


def _holding_the_lock(args, db: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `ndup ARGS`, wait until it holds the cache's lock, and freeze it there (SIGSTOP)."""
    proc = subprocess.Popen(
        ndup_command(*args, "--db", db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    lock, deadline = lock_path(db), time.monotonic() + 60
    while time.monotonic() < deadline:
        if lock.exists() and lock.read_text().strip() == str(proc.pid):
            proc.send_signal(signal.SIGSTOP)
            return proc
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.002)
    raise AssertionError(f"ndup {args} never took the lock")


@pytest.mark.slow
@pytest.mark.parametrize(
    "first,second",
    [("scan", "scan"), ("scan", "apply"), ("apply", "undo"), ("apply", "scan")],
    ids=lambda a: a,
)
def test_a_second_run_refuses_at_once_while_the_first_goes_on(dup_tree, first, second):
    lib, db = dup_tree
    args = {"scan": ["scan", lib, "--quiet", "--workers", "1"], "apply": ["apply", "--yes"], "undo": ["undo"]}
    holder = _holding_the_lock(args[first], db, env={"NDUP_TEST_ACTION_DELAY": "0.05"})
    try:
        ran = run_ndup(*args[second], "--db", db, timeout=60)
        assert ran.returncode == 3, ran.err
        assert one_error_line(ran) == (
            f"ndup: error: another ndup run is using {db} (pid {holder.pid}) "
            "(hint: wait for it to finish; a crashed run releases the lock by itself)"
        )
        # reading the cache needs no lock: the latest finished plan is there to see meanwhile
        shown = run_ndup("groups", "--db", db, "--json", timeout=60)
        assert shown.returncode == 0 and len(json.loads(shown.out)["groups"]) == 2
    finally:
        holder.send_signal(signal.SIGCONT)
        _, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert integrity(db) == [("ok",)]


def test_scans_of_one_library_into_two_caches_do_not_meet(tmp_path):
    """The lock is per cache: two scans with their own caches run side by side."""
    lib = make_tree(tmp_path)
    procs = [
        subprocess.Popen(ndup_command("scan", lib, "--db", tmp_path / f"c{i}/ndup.db", "--json", "--workers", "1"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]  # fmt: skip
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        docs.append(json.loads(out))
    assert [len(d["groups"]) for d in docs] == [2, 2]
