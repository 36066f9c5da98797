"""ndup eval and ndup explain, through the command line, with the shipped model."""

import json
import os
import subprocess
import sys

import pytest
from conftest import photo, save
from PIL import Image, ImageOps


def ndup(*args):
    return subprocess.run(
        [sys.executable, "-m", "ndup", *map(str, args)], capture_output=True, text=True, timeout=600, env=os.environ
    )


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled")
    truth, kinds = {}, {}
    for i in range(4):
        im = photo(700 + i, 640, 480)
        save(im, root / f"p{i}.jpg", quality=92)
        save(im.resize((320, 240), Image.LANCZOS), root / f"p{i}_small.jpg", quality=85)
        save(ImageOps.mirror(im), root / f"p{i}_mirror.jpg", quality=90)
        truth.update({f"p{i}.jpg": i, f"p{i}_small.jpg": i, f"p{i}_mirror.jpg": i})
        kinds.update({f"p{i}.jpg": "original", f"p{i}_small.jpg": "resize", f"p{i}_mirror.jpg": "mirror"})
    (root.parent / "truth.json").write_text(json.dumps(truth))
    (root.parent / "kinds.json").write_text(json.dumps(kinds))
    return root


def test_eval_reports_pairwise_scores_and_recall_per_kind(labelled, tmp_path):
    truth, kinds = labelled.parent / "truth.json", labelled.parent / "kinds.json"
    r = ndup("eval", labelled, "--truth", truth, "--kinds", kinds, "--db", tmp_path / "e.db", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["metrics"]
    assert m["true_pairs"] == 12 and set(m["recall_by_kind"]) == {"resize", "mirror"}
    assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and m["average_precision"] is not None
    table = ndup("eval", labelled, "--truth", truth, "--db", tmp_path / "e.db")
    assert table.returncode == 0 and "precision" in table.stdout and "PR AUC" in table.stdout


def test_scan_with_a_missing_weights_file_says_so(labelled, tmp_path):
    r = ndup("scan", labelled, "--weights", tmp_path / "mine.npz", "--db", tmp_path / "w.db")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert f"ndup: error: weights file not found: {tmp_path / 'mine.npz'}" in r.stderr


def test_eval_with_a_missing_truth_file_is_a_usage_error(labelled, tmp_path):
    r = ndup("eval", labelled, "--truth", tmp_path / "nope.json", "--db", tmp_path / "e.db")
    assert r.returncode == 2 and r.stderr.startswith("ndup: error: no such file") and "Traceback" not in r.stderr


def test_explain_a_copy_pair_and_save_the_aligned_views(labelled, tmp_path):
    png = tmp_path / "why.png"
    r = ndup("explain", labelled / "p0.jpg", labelled / "p0_mirror.jpg", "--save", png, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["tier"] == "copy" and report["probabilities"]["copy"] >= report["copy_threshold"]
    assert report["cosine_after_alignment"] > report["cosine_before_alignment"]  # the mirror is undone
    assert {"phash", "dhash", "phash_aligned", "cos_low", "cos_high"} <= set(report["features"])
    assert report["registration"]["same_picture"] and report["registration"]["mirrored"]
    with Image.open(png) as im:
        assert im.width > 400 and im.height > 400
    text = ndup("explain", labelled / "p0.jpg", labelled / "p1.jpg")
    # two different generated pictures: never copies (the shipped unit's "similar" tier is still loose on
    # these look-alike synthetic scenes; docs/benchmarks.md says where the unit falls short)
    assert text.returncode == 0 and "cosine after alignment" in text.stdout
    assert "verdict: copy" not in text.stdout and "verdict: exact" not in text.stdout


def test_explain_names_an_unreadable_file(labelled, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    r = ndup("explain", labelled / "p0.jpg", bad)
    assert r.returncode == 1 and str(bad) in r.stderr and "Traceback" not in r.stderr
