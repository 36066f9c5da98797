"""ndup cache info / prune / rebuild and ndup doctor, run in-process (fast) on the session's scanned library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ndup.cli import app
from ndup.store import Store


def run(*args: object, code: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args], prog_name="ndup")
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


def info(db: Path) -> dict:
    return json.loads(run("cache", "info", "--db", db, "--json").stdout)


def test_cache_info_on_no_cache_creates_nothing(tmp_path):
    db = tmp_path / "none.db"
    assert "none yet" in run("cache", "info", "--db", db).stdout
    assert info(db) == {"path": str(db), "exists": False, "size": 0}
    assert not db.exists()


def test_cache_info_counts_what_the_cache_holds(dup_tree):
    _, db = dup_tree
    doc = info(db)
    assert (doc["files"], doc["images"], doc["failures"], doc["runs"], doc["plans"], doc["latest_plan"]) == (
        6, 6, 0, 1, 1, 1,
    )  # fmt: skip
    assert sum(doc["embeddings"].values()) == 4 and doc["size"] >= db.stat().st_size
    assert doc["schema_version"] == Store.open(db).schema_version
    text = run("cache", "info", "--db", db).stdout
    assert str(db) in text and "6 images" in text


def _trash_then_undo_then_trash(db: Path) -> None:
    run("apply", "--yes", "--db", db)
    run("undo", "--db", db)
    run("apply", "--yes", "--db", db)  # apply run 2: its three files are in the trash now


def test_prune_removes_what_no_run_needs_and_keeps_what_undo_and_people_need(dup_tree):
    lib, db = dup_tree
    _trash_then_undo_then_trash(db)
    store = Store.open(db)
    try:
        store.write_batch([], {"f" * 64: (np.ones(4, np.float32), {}, b"")}, "an-older-model", 1)
        for _ in range(3):
            store.finish_run(store.begin_run([str(lib)], {}), "interrupted")
        store.add_ignore_set(["h" * 64], ["/nowhere/a.jpg", "/nowhere/b.jpg"])
    finally:
        store.close()
    before = info(db)

    dry = json.loads(run("cache", "prune", "--db", db, "--keep-runs", "1", "--dry-run", "--json").stdout)
    assert dry["removed"] == {
        "files": 3,  # trashed by apply run 2
        "embeddings_of_other_models": 1,
        "embeddings_without_file": 1,  # the smaller export's: no other file has its contents
        "journal_entries": 3,  # apply run 1, undone: nothing left for undo
        "apply_runs": 1,
        "runs": 2,  # not the newest, not the latest plan, not a plan an apply run refers to
    }
    after_dry = info(db)
    assert {k: v for k, v in after_dry.items() if k != "size"} == {k: v for k, v in before.items() if k != "size"}

    text = run("cache", "prune", "--db", db, "--keep-runs", "1").stdout
    assert text.startswith("Removed 3 cached files that no longer exist")
    doc = info(db)
    assert (doc["files"], doc["runs"], doc["apply_runs"], doc["undoable_apply_runs"]) == (3, 2, 1, 1)
    assert doc["not_duplicate_sets"] == 1 and "an-older-model" not in doc["embeddings"]
    assert "Nothing to prune." in run("cache", "prune", "--db", db, "--keep-runs", "1").stdout
    run("undo", "--db", db)  # the journal undo needs survived
    assert len(list(lib.rglob("*.*"))) == 6
    assert run("groups", "--db", db).exit_code == 0  # the latest plan survived


def test_rebuild_keeps_decisions_and_journal_and_run_ids_go_on(dup_tree):
    lib, db = dup_tree
    run("apply", "--yes", "--db", db)
    store = Store.open(db)
    store.add_ignore_set(["h" * 64], ["/x.jpg"])
    store.close()
    text = run("cache", "rebuild", "--db", db).stdout
    [backup] = [p for p in db.parent.iterdir() if ".bak-" in p.name]
    assert str(backup) in text and "1 apply runs (3 journal entries)" in text
    doc = info(db)
    assert (doc["files"], doc["plans"], doc["apply_runs"], doc["journal_entries"], doc["not_duplicate_sets"]) == (
        0, 0, 1, 3, 1,
    )  # fmt: skip
    assert Store.open(backup).stats()["files"] == 6  # the old file, whole, beside the new one
    run("undo", "--db", db)
    assert len(list(lib.rglob("*.*"))) == 6
    rescan = json.loads(run("scan", lib, "--db", db, "--json", "--workers", "1").stdout)
    assert rescan["run_id"] == 2  # never the id of the plan apply run 1 acted on


def test_a_damaged_cache_is_one_line_pointing_at_rebuild_which_refuses_to_lose_decisions(tmp_path):
    db = tmp_path / "ndup.db"
    garbage = os.urandom(1 << 15)
    db.write_bytes(garbage)
    for args in (["groups"], ["cache", "info"], ["cache", "prune"]):
        r = run(*args, "--db", db, code=1)
        assert r.stderr.startswith(f"ndup: error: the cache {db} is damaged") and "ndup cache rebuild" in r.stderr
        assert "Traceback" not in r.stderr
    r = run("cache", "rebuild", "--db", db, code=1)
    assert "cannot read group_decisions" in r.stderr and "--force" in r.stderr
    assert db.read_bytes() == garbage and len(list(tmp_path.iterdir())) == 2  # and the lock file
    r = run("cache", "rebuild", "--db", db, "--force")
    [backup] = tmp_path.glob("ndup.db.bak-*")
    assert backup.read_bytes() == garbage and "could not be read" in r.stderr
    assert info(db)["files"] == 0


def test_a_cache_damaged_under_a_command_is_the_same_clear_line(tmp_path, monkeypatch):
    import sqlite3

    def broken(self, run_id=None):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Store, "require_plan", broken)
    r = run("groups", "--db", tmp_path / "c.db", code=1)
    assert r.stderr.startswith(
        f"ndup: error: the cache {tmp_path / 'c.db'} is damaged (database disk image is malformed)"
    )
    assert "ndup cache rebuild" in r.stderr


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A weights file where the shipped one goes (the real one lands with issue 3)."""
    import ndup.model.spec as spec

    path = tmp_path / "ndup-v1.npz"
    meta = {"format": 1, "trained_on": ["a", "b", "c"], "validated_on": ["d"], "held_out": ["e", "f"],
            "stages": {"canonicalizer": {}, "projection": {}}, "seconds": 12.5, "torch": "2.14.1"}  # fmt: skip
    np.savez(path, meta=np.array(json.dumps(meta)), w=np.zeros(3))
    monkeypatch.setattr(spec, "SHIPPED_WEIGHTS", path, raising=False)
    return path


def test_doctor_says_what_is_missing_and_exits_1(tmp_path, monkeypatch):
    import ndup.model.spec as spec

    monkeypatch.setattr(spec, "SHIPPED_WEIGHTS", tmp_path / "gone.npz", raising=False)
    r = run("doctor", "--db", tmp_path / "c.db", code=1)
    assert "gone.npz" in r.stdout and "MISSING" in r.stdout and r.stdout.rstrip().endswith("1 problem found.")
    doc = json.loads(run("doctor", "--json", "--db", tmp_path / "c.db", code=1).stdout)
    assert doc["ok"] is False and doc["problems"][0].startswith("weights: the model's weights file is missing")


def test_doctor_finds_the_shipped_weights_of_a_fresh_install(dup_tree):
    _, db = dup_tree
    doc = json.loads(run("doctor", "--json", "--db", db).stdout)
    assert doc["ok"] and doc["weights"]["exists"] and doc["weights"]["path"].endswith("ndup-v1.npz")


def test_doctor_healthy(weights, dup_tree):
    _, db = dup_tree
    doc = json.loads(run("doctor", "--json", "--db", db).stdout)
    assert doc["ok"] and doc["problems"] == []
    assert doc["weights"]["meta"] == {"format": 1, "trained_on": 3, "validated_on": 1, "held_out": 2,
                                      "seconds": 12.5, "stages": ["canonicalizer", "projection"], "torch": "2.14.1"}  # fmt: skip
    assert doc["torch"]["device"].startswith(("cpu", "cuda", "mps")) and doc["cache"]["images"] == 6
    assert set(doc["formats"]) >= {"heif", "avif", "raw", "webp", "jpeg2000"}
    assert doc["registration"]["installed"] and doc["registration"]["opencv"]

    text = run("doctor", "--db", db).stdout
    assert "Everything ndup needs is in place." in text and str(weights) in text

    (Path(os.environ["XDG_CONFIG_HOME"]) / "ndup").mkdir(parents=True)
    (Path(os.environ["XDG_CONFIG_HOME"]) / "ndup/config.toml").write_text("[scan\n")
    doc = json.loads(run("doctor", "--json", "--db", db, code=1).stdout)
    assert doc["problems"][0].startswith("config: config file") and "not valid TOML" in doc["problems"][0]


def test_doctor_names_a_missing_opencv(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    doc = json.loads(run("doctor", "--json", "--db", tmp_path / "c.db", code=1).stdout)
    assert any(p.startswith("OpenCV: not installed") and "opencv-python-headless" in p for p in doc["problems"])


def test_a_rebuild_that_fails_puts_the_old_cache_back(dup_tree, monkeypatch):
    _, db = dup_tree
    before = db.read_bytes()

    def fail(self, kept, last_run_id):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "restore_user_tables", fail)
    r = run("cache", "rebuild", "--db", db, code=1)
    assert r.stderr.startswith(f"ndup: error: cannot rebuild the cache {db}: No space left on device (hint: it is")
    assert db.read_bytes() == before and not list(db.parent.glob("*.bak-*"))
