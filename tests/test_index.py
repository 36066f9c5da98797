"""The persisted HNSW index: incremental updates, deletions, damage, and the scan that keeps it."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import photo, save

from ndup import neighbors
from ndup.config import ScanSettings
from ndup.match_cache import match_path
from ndup.pair_cache import PairCache
from ndup.records import PairVerdict
from ndup.scan import CANDIDATE_MIN_COSINE, Progress, _indexed_pairs, index_path, run_scan
from ndup.store import Store


def unit(rng, n, dim=32):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(x, k):
    return np.argsort(-(x @ x.T), axis=1)[:, :k]


def overlap(a, b):
    return np.mean([len(set(r) & set(s)) / len(s) for r, s in zip(a.tolist(), b.tolist())])


def test_the_search_beam_grows_with_the_library_beyond_a_quarter_million_vectors():
    assert neighbors.query_ef(12, 1_000) == neighbors.query_ef(12, neighbors.BEAM_GROWS_FROM) == 64
    assert neighbors.query_ef(12, 1_000_000) == 128 and neighbors.query_ef(12, 4_000_000) == 256
    assert neighbors.query_ef(40, 1_000) == 80  # never below twice the neighbours asked for
    beams = [neighbors.query_ef(12, n) for n in range(0, 5_000_000, 50_000)]
    assert beams == sorted(beams)


def test_adding_rows_adds_only_those_and_removed_rows_vanish(tmp_path):
    rng = np.random.default_rng(1)
    x = unit(rng, 300)
    keys = [f"h{i}" for i in range(300)]
    first = neighbors.IndexFile(tmp_path / "c.db.hnsw", "m")
    pos, _ = first.search(keys, x, 6)
    assert first.report.rebuilt and first.report.added == 300 and first.report.note is None
    assert overlap(pos, brute(x, 6)) > 0.95

    again = neighbors.IndexFile(tmp_path / "c.db.hnsw", "m")
    pos2, _ = again.search(keys, x, 6)
    r = again.report
    assert (r.added, r.removed, r.queried, r.rebuilt, r.saved) == (0, 0, 0, False, False)  # nothing to do
    assert (pos2 == pos).all()

    # 5 rows go, 7 come: exactly those are inserted; the rest is searched only near a change
    x2 = np.concatenate([x[5:], unit(rng, 7)])
    keys2 = keys[5:] + [f"new{i}" for i in range(7)]
    later = neighbors.IndexFile(tmp_path / "c.db.hnsw", "m")
    pos3, sims = later.search(keys2, x2, 6)
    r = later.report
    assert (r.added, r.removed, r.rebuilt) == (7, 5, False)
    assert r.queried < len(keys2)
    assert pos3.max() < len(keys2)  # positions refer to the current rows only: removed rows are gone
    assert overlap(pos3, brute(x2, 6)) > 0.95
    assert np.allclose(sims[:, 0], 1.0, atol=1e-4)  # each row finds itself first


def test_slots_of_removed_rows_are_reused(tmp_path):
    rng = np.random.default_rng(2)
    x = unit(rng, 100)
    path = tmp_path / "c.db.hnsw"
    neighbors.IndexFile(path, "m").search([f"a{i}" for i in range(100)], x, 4)
    size = path.stat().st_size
    for round_ in range(3):  # replace half the rows three times: the file does not grow each time
        x = np.concatenate([x[:50], unit(rng, 50)])
        keys = [f"a{i}" for i in range(50)] + [f"r{round_}-{i}" for i in range(50)]
        idx = neighbors.IndexFile(path, "m")
        idx.search(keys, x, 4)
        assert (idx.report.added, idx.report.removed) == (50, 50)
    assert path.stat().st_size <= size * 1.6


@pytest.mark.parametrize("damage", ["bytes", "truncated", "meta_missing", "meta_garbage", "other_index"])
def test_a_damaged_index_is_rebuilt_with_a_note(tmp_path, damage):
    rng = np.random.default_rng(3)
    x = unit(rng, 120)
    keys = [f"h{i}" for i in range(120)]
    path = tmp_path / "c.db.hnsw"
    neighbors.IndexFile(path, "m").search(keys, x, 5)
    data = path.read_bytes()
    if damage == "bytes":
        path.write_bytes(data[:200] + bytes(64) + data[264:])
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "meta_missing":
        os.unlink(f"{path}.meta")
    elif damage == "meta_garbage":
        with open(f"{path}.meta", "wb") as f:
            f.write(b"PK\x03\x04 not really")
    else:  # a crash between the two renames: a valid index that is not the one the meta describes
        other = tmp_path / "other.hnsw"
        neighbors.IndexFile(other, "m").search(keys[:60], x[:60], 5)
        os.replace(other, path)
    idx = neighbors.IndexFile(path, "m")
    pos, _ = idx.search(keys, x, 5)
    assert idx.report.rebuilt and "rebuilt" in idx.report.note
    assert overlap(pos, brute(x, 5)) > 0.95
    fresh = neighbors.IndexFile(path, "m")  # and the rebuilt file is sound
    fresh.search(keys, x, 5)
    assert not fresh.report.rebuilt and fresh.report.note is None


def test_another_model_or_other_vectors_mean_a_rebuild(tmp_path):
    rng = np.random.default_rng(4)
    x = unit(rng, 80)
    keys = [f"h{i}" for i in range(80)]
    path = tmp_path / "c.db.hnsw"
    neighbors.IndexFile(path, "model-1").search(keys, x, 5)
    idx = neighbors.IndexFile(path, "model-2")
    idx.search(keys, x, 5)
    assert idx.report.rebuilt and "another model" in idx.report.note
    idx = neighbors.IndexFile(path, "model-2")  # same keys, different vectors: the cache wins
    idx.search(keys, unit(rng, 80), 5)
    assert idx.report.rebuilt and "differ" in idx.report.note


def images_near(rng, centres, n, share=0.3):
    """n images' descriptors near `centres`: first hypotheses, and second ones (NaN: none) for about
    `share` of them."""

    def near():
        v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, centres.shape[1]))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    first, second = near(), near()
    second[rng.random(n) >= share] = np.nan
    return first, second


def searched_rows(first, second):
    """The rows a scan searches (every first hypothesis, then the second ones) and their images."""
    has = ~np.isnan(second[:, 0])
    return np.concatenate([first, second[has]]), np.concatenate([np.arange(len(first)), np.flatnonzero(has)])


def test_second_hypotheses_are_in_the_persisted_index_and_it_finds_what_a_fresh_search_finds(tmp_path):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, 32))
    first, second = images_near(rng, centres, 200)
    hashes = [f"h{i}" for i in range(200)]
    for step in ("built", "updated"):
        rows, owners = searched_rows(first, second)
        index = neighbors.IndexFile(tmp_path / "c.db.hnsw", "m")
        found = _indexed_pairs(index, hashes, rows, owners, len(first), 10)
        assert found.keys() == neighbors.knn_pairs(rows, 10, min_similarity=CANDIDATE_MIN_COSINE, owners=owners).keys()
        assert index.report.rows == len(rows) > len(first)  # one row per hypothesis
        if step == "updated":
            assert not index.report.rebuilt and index.report.removed > 0 and index.report.added > 0
        # 20 images gone, 30 new
        more = images_near(rng, centres, 30)
        first, second = np.concatenate([first[20:], more[0]]), np.concatenate([second[20:], more[1]])
        hashes = hashes[20:] + [f"{step}{i}" for i in range(30)]


class StubEmbedder:
    """The network's output shape with a cheap descriptor (the coarse colour layout)."""

    def embed(self, pixels, aspects=None):
        n, side = len(pixels), pixels.shape[1]
        v = pixels.reshape(n, 8, side // 8, 8, side // 8, 3).mean(axis=(2, 4)).reshape(n, -1).astype(np.float32)
        v -= v.mean(axis=1, keepdims=True)
        return {
            "vector": v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6),
            "phash": np.zeros(n, dtype=np.uint64),
            "thumb": [np.zeros((12, 16), dtype=np.uint8)] * n,
        }


class Notes(Progress):
    def __init__(self):
        self.notes = []

    def note(self, text):
        self.notes.append(text)


def stub_scan(root, db, progress=None):
    settings = ScanSettings(roots=(root,), db_path=db, workers=1, variant="multilayer")
    return run_scan(settings, progress, embedder_factory=lambda s: StubEmbedder())


def test_scan_keeps_the_index_up_to_date(tmp_path):
    lib, db = tmp_path / "lib", tmp_path / "c" / "ndup.db"
    for i in range(6):
        save(photo(500 + i, 320, 240), lib / f"p{i}.jpg", quality=90)
    save(photo(500, 320, 240), lib / "copy-of-p0.png")
    plan = stub_scan(lib, db)
    assert plan.summary["index"]["added"] == 7 and plan.summary["index"]["rebuilt"]
    assert index_path(db).exists() and os.path.exists(f"{index_path(db)}.meta")

    groups = plan.groups
    plan = stub_scan(lib, db)  # unchanged: the last match is reused, the index is not even opened
    assert plan.summary["match_reused"] and "index" not in plan.summary and plan.groups == groups
    match_path(db).unlink()  # without the last match: matched again, and nothing added or searched
    plan = stub_scan(lib, db)
    assert plan.summary["index"] == {"rows": 7, "added": 0, "removed": 0, "searched": 0, "rebuilt": False}

    for i in range(6, 8):  # two new photos: two insertions, no rebuild
        save(photo(500 + i, 320, 240), lib / f"p{i}.jpg", quality=90)
    plan = stub_scan(lib, db)
    assert plan.summary["decoded"] == 2
    assert (plan.summary["index"]["added"], plan.summary["index"]["rebuilt"]) == (2, False)

    (lib / "copy-of-p0.png").unlink()  # a deleted file leaves the index and the results
    plan = stub_scan(lib, db)
    assert plan.summary["index"]["removed"] == 1
    assert all("copy-of-p0" not in m.path for g in plan.groups for m in g.members)

    index_path(db).write_bytes(b"not an index")  # damaged: rebuilt, said in one note, the scan goes on
    save(photo(520, 320, 240), lib / "p-new.jpg", quality=90)  # something to match
    notes = Notes()
    plan = stub_scan(lib, db, notes)
    assert plan.summary["index"]["rebuilt"] and len(notes.notes) == 1 and "rebuilt" in notes.notes[0]


def test_a_rescan_reuses_the_verdicts_of_unchanged_pairs(tmp_path):
    lib, db = tmp_path / "lib", tmp_path / "ndup.db"
    base = photo(600, 320, 240)
    for i in range(5):
        save(photo(600 + i, 320, 240), lib / f"p{i}.jpg", quality=90)
    save(base, lib / "p0-again.jpg", quality=70)
    first = stub_scan(lib, db)
    total = first.summary["pairs"]["verified"]
    assert total > 0 and first.summary["pairs"]["reused"] == 0
    match_path(db).unlink()  # so that the pairs are looked at again, not the last match reused
    again = stub_scan(lib, db)
    assert again.summary["pairs"] == {"reused": total, "verified": 0}
    assert [(g.tier, [m.path for m in g.members]) for g in again.groups] == [
        (g.tier, [m.path for m in g.members]) for g in first.groups
    ]
    save(photo(601, 320, 240), lib / "p1-again.jpg", quality=60)  # only pairs with the new photo are verified
    later = stub_scan(lib, db)
    assert 0 < later.summary["pairs"]["verified"] < total + 1
    (tmp_path / "ndup.db.pairs").write_bytes(b"damaged")  # damaged: everything verified again, no error
    match_path(db).unlink()
    assert stub_scan(lib, db).summary["pairs"]["reused"] == 0


class Stages(Progress):
    def __init__(self):
        self.stages = []

    def stage(self, name, total=None):
        self.stages.append((name, total))


def test_a_rescan_verifies_nothing_again_not_even_the_pairs_within_groups(tmp_path, monkeypatch):
    """With 2 neighbours (and no hash buckets), six copies of one photo are linked by the candidate
    search only in part; the rest of their pairs are verified as pairs within a group. A rescan must
    reuse both kinds."""
    monkeypatch.setattr(neighbors, "near_hash_pairs", lambda hashes, bits: set())
    lib, db = tmp_path / "lib", tmp_path / "ndup.db"
    base = photo(650, 320, 240)
    for q in range(6):
        save(base, lib / f"copy{q}.jpg", quality=60 + 7 * q)
    for i in range(3):
        save(photo(660 + i, 320, 240), lib / f"other{i}.jpg", quality=90)
    settings = ScanSettings(roots=(lib,), db_path=db, workers=1, variant="multilayer", neighbors=2)
    seen = Stages()
    first = run_scan(settings, seen, embedder_factory=lambda s: StubEmbedder())
    names = [name for name, _ in seen.stages]
    assert "Verifying pairs" in names and "Verifying pairs within groups" in names
    assert (
        sum(total for name, total in seen.stages if name.startswith("Verifying")) == first.summary["pairs"]["verified"]
    )
    assert [len(g.members) for g in first.groups] == [6]
    match_path(db).unlink()
    seen = Stages()
    again = run_scan(settings, seen, embedder_factory=lambda s: StubEmbedder())
    assert again.summary["pairs"] == {"reused": first.summary["pairs"]["verified"], "verified": 0}
    assert not [name for name, _ in seen.stages if name.startswith("Verifying")]


def test_a_rescan_of_an_unchanged_library_reuses_the_last_match_and_any_change_matches_again(tmp_path):
    lib, db = tmp_path / "lib", tmp_path / "ndup.db"
    for i in range(4):
        save(photo(700 + i, 320, 240), lib / f"p{i}.jpg", quality=90)
    save(photo(700, 320, 240), lib / "p0-again.jpg", quality=70)
    first = stub_scan(lib, db)
    assert not first.summary["match_reused"] and first.groups
    again = stub_scan(lib, db)
    assert again.summary["match_reused"] and again.groups == first.groups

    def rescan(**changes):
        settings = ScanSettings(roots=(lib,), db_path=db, workers=1, variant="multilayer", **changes)
        return run_scan(settings, None, embedder_factory=lambda s: StubEmbedder())

    # what a match depends on: its settings, and the "not duplicates" sets a person made in review
    assert not rescan(neighbors=5).summary["match_reused"]
    assert rescan(neighbors=5).summary["match_reused"]
    assert not rescan(threshold=0.99).summary["match_reused"]
    members = [m.path for m in first.groups[0].members]
    with Store.open(db) as store:
        store.add_ignore_set([hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in members], members)
    assert not stub_scan(lib, db).summary["match_reused"]
    # and the files: a touched file (same bytes) or a new one
    os.utime(lib / "p1.jpg", ns=(1, 1))
    assert not stub_scan(lib, db).summary["match_reused"]
    match_path(db).write_text("{damaged")
    assert not stub_scan(lib, db).summary["match_reused"]  # damaged: matched again, no error


def test_verdicts_of_an_unsaved_call_are_reused_by_the_next_and_saved_with_it(tmp_path):
    hashes = [f"h{i}" for i in range(4)]
    calls = []

    def verify(sub):
        calls.append(sub.tolist())
        return [PairVerdict(int(a), int(b), "copy", 0.9, 0.95) for a, b in sub]

    cache = PairCache(tmp_path / "c.pairs", "v")
    first = np.array([[0, 1], [1, 2]])
    cache.verdicts(hashes, first, verify, save=False)
    assert not (tmp_path / "c.pairs").exists()
    both = np.concatenate([first, [[0, 2]]])
    cache.verdicts(hashes, both, verify)
    assert calls == [[[0, 1], [1, 2]], [[0, 2]]]  # the second call verified only the new pair
    assert (cache.verified, cache.reused) == (3, 0)
    later = PairCache(tmp_path / "c.pairs", "v")
    out = later.verdicts(hashes, both, verify)
    assert len(calls) == 2 and [x.tier for x in out] == ["copy"] * 3 and later.reused == 3
