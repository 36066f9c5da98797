"""The pair-verdict cache: reuse across calls and scans, pruning, and checkpoints that survive a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ndup import pair_cache
from ndup.pair_cache import PairCache
from ndup.records import PairVerdict


class Verifier:
    """Calls a pair a copy when its two indices add up to an even number; remembers what it was asked."""

    def __init__(self):
        self.asked: list[tuple[int, int]] = []

    def __call__(self, pairs: np.ndarray) -> list[PairVerdict]:
        self.asked += [(int(a), int(b)) for a, b in pairs]
        return [PairVerdict(int(a), int(b), "copy" if (a + b) % 2 == 0 else None, 0.5, 0.9) for a, b in pairs]


def all_pairs(n: int) -> np.ndarray:
    return np.array([(a, b) for a in range(n) for b in range(a + 1, n)], dtype=np.int64)


def test_a_second_call_and_a_second_scan_reuse_every_verdict_known(tmp_path):
    path, hashes = tmp_path / "c.pairs", [f"h{i}" for i in range(8)]
    pairs = all_pairs(8)
    first = pairs[:10]
    verify = Verifier()
    cache = PairCache(path, "v")
    cache.verdicts(hashes, first, verify, save=False)
    out = cache.verdicts(hashes, pairs, verify)
    assert sorted(verify.asked) == sorted(map(tuple, pairs.tolist()))  # each pair verified once
    assert [v.tier for v in out] == ["copy" if (a + b) % 2 == 0 else None for a, b in pairs]

    # the next scan asks for the first pairs alone, then all of them (kNN pairs, then pairs within
    # groups): the file's verdicts of the second call's pairs must not be forgotten in between
    verify = Verifier()
    cache = PairCache(path, "v")
    cache.verdicts(hashes, first, verify, save=False)
    again = cache.verdicts(hashes, pairs, verify)
    assert verify.asked == [] and (cache.reused, cache.verified) == (len(pairs), 0)
    assert again == out


def test_a_pair_file_names_its_verifier_and_a_missing_or_damaged_one_none(tmp_path):
    path = tmp_path / "c.pairs"
    assert pair_cache.file_verifier(path) is None
    PairCache(path, "v").verdicts(["a", "b"], all_pairs(2), Verifier())
    assert pair_cache.file_verifier(path) == pair_cache.stored_verifier("v")
    path.write_bytes(path.read_bytes()[:40])
    assert pair_cache.file_verifier(path) is None


def test_verdicts_follow_contents_not_positions_and_the_file_keeps_only_the_last_pairs(tmp_path):
    path = tmp_path / "c.pairs"
    verify = Verifier()
    PairCache(path, "v").verdicts(["a", "b", "c"], all_pairs(3), verify)
    # "a" and "b" at other positions, a new "x" between them, "c" gone. A verdict is kept per ordered
    # pair of contents (the verifier need not be symmetric), so (a, b) is known and the rest is new.
    verify = Verifier()
    cache = PairCache(path, "v")
    out = cache.verdicts(["a", "x", "b"], all_pairs(3), verify)
    assert verify.asked == [(0, 1), (1, 2)] and cache.reused == 1
    assert (out[1].a, out[1].b, out[1].tier) == (0, 2, None)  # (a, b) as verified at (0, 1): odd, not a copy
    with np.load(path) as z:  # the file holds the pairs of the last call only
        assert len(z["keys"]) == 3 and z["hashes"].astype(str).tolist() == ["a", "b", "x"]


def test_another_verifier_never_reuses_a_verdict(tmp_path):
    path, hashes, pairs = tmp_path / "c.pairs", ["a", "b"], all_pairs(2)
    PairCache(path, "v1").verdicts(hashes, pairs, Verifier())
    verify = Verifier()
    PairCache(path, "v2").verdicts(hashes, pairs, verify)
    assert verify.asked == [(0, 1)]


def test_progress_is_reported_in_chunks_of_what_is_verified(tmp_path, monkeypatch):
    monkeypatch.setattr(pair_cache, "VERIFY_CHUNK", 4)
    started, done = [], []
    PairCache(None, "v").verdicts([f"h{i}" for i in range(5)], all_pairs(5), Verifier(), on_start=started.append,
                                  on_verified=done.append)  # fmt: skip
    assert started == [10] and done == [4, 4, 2]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("checkpoint_seconds", [0.0, 1e9])
def test_a_stopped_verification_keeps_what_it_verified(tmp_path, monkeypatch, stop, checkpoint_seconds):
    """Ctrl-C (or a failure) after three chunks: the file holds their verdicts, whether or not a
    checkpoint was due, and the next scan verifies only the rest."""
    monkeypatch.setattr(pair_cache, "VERIFY_CHUNK", 5)
    path, hashes, pairs = tmp_path / "c.pairs", [f"h{i}" for i in range(10)], all_pairs(10)
    verify = Verifier()

    def stops_after_three_chunks(sub):
        if len(verify.asked) >= 15:
            raise stop
        return verify(sub)

    cache = PairCache(path, "v", checkpoint_seconds=checkpoint_seconds)
    with pytest.raises(stop):
        cache.verdicts(hashes, pairs, stops_after_three_chunks, save=False)
    verify_again = Verifier()
    cache = PairCache(path, "v")
    cache.verdicts(hashes, pairs, verify_again)
    assert (cache.reused, cache.verified) == (15, len(pairs) - 15)
    assert set(verify_again.asked).isdisjoint(verify.asked)


KILLED_SCAN = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from ndup import pair_cache
    from ndup.pair_cache import PairCache
    from ndup.records import PairVerdict

    pair_cache.VERIFY_CHUNK = 10

    def slow(pairs):
        time.sleep(0.05)
        print(len(pairs), flush=True)
        return [PairVerdict(int(a), int(b), "copy", 0.5, 0.9) for a, b in pairs]

    hashes = [f"h{i}" for i in range(40)]
    pairs = np.array([(a, b) for a in range(40) for b in range(a + 1, 40)], dtype=np.int64)
    PairCache(sys.argv[1], "v", checkpoint_seconds=0).verdicts(hashes, pairs, slow)
    """
)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_scan_killed_while_verifying_loses_no_saved_verdict_and_the_file_stays_readable(tmp_path):
    path = tmp_path / "ndup.db.pairs"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCAN, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        chunks = 0
        while chunks < 12:  # the 12th chunk is being verified: the 11 before it were checkpointed
            line = proc.stdout.readline()
            assert line, "the verifying process ended early"
            chunks += 1
        time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    hashes = [f"h{i}" for i in range(40)]
    pairs = all_pairs(40)
    verify = Verifier()
    cache = PairCache(path, "v")
    out = cache.verdicts(hashes, pairs, verify)
    assert cache.reused >= 110 and cache.reused + cache.verified == len(pairs) == 780
    assert all(v.tier == "copy" for v in out if (v.a, v.b) not in set(verify.asked))
