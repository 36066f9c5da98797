"""Fuzzing the decode path (issue 7): hypothesis damages valid JPEG, PNG, GIF, WebP and TIFF files (bit
flips, overwritten bytes and fields, truncation, duplicated and dropped chunks) and `decode.analyze` must
answer each with Decoded, NotAnImage or Failure: never raise, never hang, never a multi-line reason.

CI runs a fixed set of examples per format (derandomized, so a CI run never finds something new by
chance); NDUP_HARDENING=long runs many more, randomly, and NDUP_FUZZ_EXAMPLES=N any number per format.
See docs/reliability.md.
"""

import faulthandler
import io
import os
import signal
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from harness import LONG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagegen import camera_exif
from PIL import Image

from ndup.decode import MODEL_SIDE, analyze
from ndup.records import Decoded, Failure, NotAnImage

# Per format. NDUP_FUZZ_EXAMPLES=N asks for N (random too, with NDUP_HARDENING=long): a run as long as wanted.
EXAMPLES = int(os.environ.get("NDUP_FUZZ_EXAMPLES") or (5_000 if LONG else 60))
SECONDS_PER_EXAMPLE = 10  # a decoder still busy after this is a hang


def _encoded(fmt: str) -> bytes:
    im = photo(21, 96, 72)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=85, exif=camera_exif(orientation=6, gps=(48.1, 11.5), rating=4).tobytes())
    elif fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Comment", "a photo")
        info.add_itxt("XML:com.adobe.xmp", '<x xmp:Rating="3"/>', zip=True)
        im.convert("RGBA").save(buf, "PNG", pnginfo=info)
    elif fmt in ("GIF", "WEBP"):
        im.save(buf, fmt, save_all=True, append_images=[photo(22, 96, 72)], duration=100, loop=0)
    else:
        im.save(buf, "TIFF", compression="tiff_lzw", save_all=True, append_images=[photo(22, 96, 72)])
    return buf.getvalue()


FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "TIFF": "tif"}
ORIGINALS = {fmt: _encoded(fmt) for fmt in FORMATS}
# Values that make length, offset and size fields lie the hardest.
WILD = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x01\x00\x00"]

position = st.integers(min_value=0, max_value=1 << 20)
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("overwrite"), position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("wild"), position, st.sampled_from(WILD)),
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("duplicate"), position, position, st.integers(1, 512)),
    st.tuples(st.just("drop"), position, st.integers(1, 512)),
)


def mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, at, *args in mutations:
        if not out:
            break
        i = at % len(out)
        if kind == "flip":
            out[i] ^= 1 << args[0]
        elif kind in ("overwrite", "wild"):
            out[i : i + len(args[0])] = args[0]
        elif kind == "truncate":
            del out[i:]
        elif kind == "duplicate":
            j = args[0] % len(out)
            out[i:i] = out[j : j + args[1]]
        else:
            del out[i : i + args[0]]
    return bytes(out)


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that analyze's `except Exception` cannot swallow it."""


def _alarm(signum, frame):
    raise Hang(f"decode.analyze still busy after {SECONDS_PER_EXAMPLE} s")


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory(prefix="ndup-fuzz-") as where:
        yield Path(where)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_damaged_files_never_break_the_decoder(fmt, folder):
    path = folder / f"fuzzed.{FORMATS[fmt]}"
    outcomes: Counter = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,  # a shared CPU: the alarm below bounds each example instead
        derandomize=not LONG,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(mutation, min_size=1, max_size=6))
    def check(mutations):
        path.write_bytes(mutate(ORIGINALS[fmt], mutations))
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_EXAMPLE)
        # A hang inside C code never returns to Python for the alarm: then stop the whole run, loudly.
        faulthandler.dump_traceback_later(6 * SECONDS_PER_EXAMPLE, exit=True)
        try:
            with warnings.catch_warnings(record=True) as noise:
                warnings.simplefilter("always")
                out = analyze(str(path))
        finally:
            faulthandler.cancel_dump_traceback_later()
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert isinstance(out, (Decoded, NotAnImage, Failure))
        outcomes[type(out).__name__] += 1
        assert [str(w.message) for w in noise] == []  # a warning would be stderr noise in a scan
        assert out.path == str(path)
        if isinstance(out, Failure):
            assert out.reason and "\n" not in out.reason
        elif isinstance(out, Decoded):
            f = out.facts
            assert f.width > 0 and f.height > 0 and len(f.content_hash) == 64
            assert out.pixels.shape == (MODEL_SIDE, MODEL_SIDE, 3) and out.pixels.dtype == np.uint8

    check()
    print(f"{fmt}: {sum(outcomes.values())} damaged files, {dict(outcomes)}")  # the counts (pytest -s)


def test_the_originals_decode():
    """The fuzzer starts from files that are fine: what it finds is the damage's doing."""
    with tempfile.TemporaryDirectory() as where:
        for fmt, ext in FORMATS.items():
            p = Path(where) / f"ok.{ext}"
            p.write_bytes(ORIGINALS[fmt])
            out = analyze(str(p))
            assert isinstance(out, Decoded) and out.facts.format == fmt, fmt
    assert Image.open(io.BytesIO(ORIGINALS["GIF"])).n_frames == 2


# ---- any text through the cache -------------------------------------------------------------------------

# Paths as Python holds them: any character, including the lone surrogates os.fsdecode makes of bytes
# that are not UTF-8, NUL, and the escape the cache itself uses.
any_text = st.lists(
    st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr), st.sampled_from(["\x00", "\x00dce9", "\n"])),
    min_size=1,
    max_size=30,
).map("".join)


@pytest.fixture(scope="module")
def store():
    from ndup.store import Store

    with tempfile.TemporaryDirectory() as where, Store.open(Path(where) / "ndup.db") as s:
        yield s


@settings(max_examples=400 if LONG else 60, deadline=None, derandomize=not LONG, database=None)
@given(st.lists(any_text, min_size=1, max_size=5, unique=True), any_text)
def test_any_text_comes_back_from_the_cache_as_it_went_in(store, paths, reason):
    from ndup.records import FileEntry, JournalEntry

    batch = [(FileEntry(p, 1, 2, 3, 4), Failure(p, reason)) for p in paths]
    store.write_batch(batch, {}, "model", 1)
    assert {p: store.cached_stats()[p].kind for p in paths} == dict.fromkeys(paths, "failed")
    assert store.failures(paths) == [Failure(p, reason) for p in paths]
    entry = JournalEntry(1, 0, 1, "move", paths[0], paths[-1], reason, None, "h", 1, 2, 0o644, "planned", reason)
    saved = store.journal_plan(entry)
    assert (saved.src, saved.dest, saved.keeper, saved.reason) == (paths[0], paths[-1], reason, reason)
    assert store.journal_set(saved, "done", reason).reason == reason
