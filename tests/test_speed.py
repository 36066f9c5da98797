"""Speed work that must not change results: the GPU decode path (run here with the CPU decoder in
nvjpeg's place), the faster inference network, and CPU runs that never touch CUDA."""

import platform
import subprocess
import sys

import numpy as np
import pytest
from conftest import photo, save
from PIL import Image
from test_index import StubEmbedder

from ndup import scan as scan_module
from ndup.config import ScanSettings
from ndup.model.embed import torch_threads
from ndup.scan import run_scan
from ndup.store import Store


def library(root):
    for i in range(4):
        save(photo(700 + i, 640, 480), root / f"p{i}.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    save(photo(710, 480, 640).transpose(Image.Transpose.ROTATE_90), root / "turned.jpg", quality=90,
         exif=exif.tobytes())  # fmt: skip
    save(photo(711, 320, 240).convert("CMYK"), root / "cmyk.jpg", quality=90)
    save(photo(712, 320, 240).convert("L"), root / "grey.jpg", quality=90)
    save(photo(713, 320, 240), root / "p.png")
    good = (root / "p0.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(good[: len(good) // 3])


def facts(db):
    with Store.open(db) as store:
        return {r.path.rsplit("/", 1)[1]: r.facts for r in store.image_records(sorted(store.cached_stats()))}


def test_jpegs_decoded_in_batches_elsewhere_give_the_cpu_facts(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    library(root)
    plans = {}
    for name, device in (("cpu", None), ("deferred", "cpu")):
        monkeypatch.setattr(scan_module, "_gpu_decoder", lambda settings, d=device: d)
        settings = ScanSettings(roots=(root,), db_path=tmp_path / f"{name}.db", workers=2, variant="multilayer")
        plans[name] = run_scan(settings, embedder_factory=lambda s: StubEmbedder())
    assert [f.path for f in plans["cpu"].failures] == [f.path for f in plans["deferred"].failures]
    assert plans["deferred"].summary["images"] == plans["cpu"].summary["images"] == 8
    cpu, deferred = facts(tmp_path / "cpu.db"), facts(tmp_path / "deferred.db")
    assert cpu.keys() == deferred.keys()
    for name in cpu:
        a, b = cpu[name], deferred[name]
        assert (a.content_hash, a.format, a.width, a.height, a.quality, a.exif_tags) == (
            b.content_hash, b.format, b.width, b.height, b.quality, b.exif_tags), name  # fmt: skip
        assert (int(a.phash, 16) ^ int(b.phash, 16)).bit_count() <= 6, name  # another decoder, the same picture
    assert deferred["turned.jpg"].width == 480 and deferred["turned.jpg"].height == 640  # EXIF orientation applied


def test_a_jpeg_the_gpu_rejects_is_decoded_in_a_worker_whose_crash_spares_the_scan(tmp_path, monkeypatch):
    """What nvjpeg cannot decode is likely damaged: the CPU decoder that takes it over runs in a worker
    process, so that crashing on it costs the worker, not the scan (and the file is reported)."""
    from harness import analyze_crashing_off_the_gpu

    from ndup.model import gpu

    root = tmp_path / "lib"
    for i in range(4):
        save(photo(720 + i, 320, 240), root / f"p{i}.jpg", quality=90)
    save(photo(730, 320, 240), root / "crash-me.jpg", quality=90)
    monkeypatch.setattr(scan_module, "_gpu_decoder", lambda settings: "cpu")
    monkeypatch.setattr(scan_module, "analyze", analyze_crashing_off_the_gpu)
    monkeypatch.setattr(gpu, "decode_jpegs", lambda datas, orientations, device: [None] * len(datas))
    settings = ScanSettings(roots=(root,), db_path=tmp_path / "c.db", workers=2, variant="multilayer")
    plan = run_scan(settings, embedder_factory=lambda s: StubEmbedder())
    reason = "the decoder crashed on this file (its worker process died); it is skipped until it changes"
    assert [(f.path, f.reason) for f in plan.failures] == [(str(root / "crash-me.jpg"), reason)]
    assert plan.summary["images"] == 4  # the others, rejected too, were decoded on the CPU


def test_faster_inference_network_computes_the_same():
    import torch

    from ndup.model.embed import VARIANTS, Embedder
    from ndup.model.weights import load_network

    rng = np.random.default_rng(0)
    pixels = np.stack([np.asarray(photo(900 + i, 256, 256)) for i in range(6)])
    pixels[3] = np.rot90(pixels[3])
    aspects = rng.uniform(0.6, 1.6, size=6).astype(np.float32)
    fast = Embedder("cpu").embed(pixels, aspects)
    plain = load_network(None, VARIANTS["full"])
    with torch.inference_mode():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        ref = plain(x, torch.from_numpy(aspects))
    assert np.abs(fast["vector"] - ref["vector"].numpy()).max() < 1e-4
    assert (fast["orientation"] == ref["orientation"].numpy()).all()
    assert (fast["phash"] == ref["phash"].numpy().astype(np.int64).view(np.uint64)).all()


def test_the_cpu_network_takes_a_batch_in_chunks_with_the_same_results(monkeypatch):
    import ndup.model.embed as embed

    pixels = np.stack([np.asarray(photo(920 + i, 256, 256)) for i in range(5)])
    pixels[1] = np.rot90(pixels[1])
    aspects = np.array([1.3, 0.75, 1.0, 1.5, 0.66], dtype=np.float32)
    embedder = embed.Embedder("cpu")
    whole = embedder.embed(pixels, aspects)
    monkeypatch.setattr(embed, "CPU_CHUNK", 2)
    chunked = embedder.embed(pixels, aspects)
    assert whole.keys() == chunked.keys()
    for key, value in whole.items():
        if isinstance(value, list):
            assert len(chunked[key]) == 5 and all(
                (a is None and b is None) or np.array_equal(a, b) for a, b in zip(value, chunked[key])
            ), key
        else:
            assert value.shape == chunked[key].shape, key
            np.testing.assert_allclose(chunked[key], value, atol=1e-5, err_msg=key)


def test_a_cpu_run_never_touches_cuda():
    """Device selection and a CPU embedding initialise no CUDA and load none of the GPU-only code."""
    code = (
        "import sys, numpy as np, torch\n"
        "from ndup.model.embed import Embedder\n"
        "e = Embedder('cpu', None, 'backbone')\n"
        "e.embed(np.zeros((2, 256, 256, 3), np.uint8), np.ones(2, np.float32))\n"
        "assert not torch.cuda.is_initialized(), 'cuda initialised'\n"
        "assert 'ndup.model.gpu' not in sys.modules, 'gpu module imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_the_cpu_network_gets_half_the_cores(monkeypatch, cores, threads):
    """The network and the decoders cost about the same per image on a CPU: each gets about half."""
    monkeypatch.delenv("NDUP_TORCH_THREADS", raising=False)
    assert torch_threads(cores) == threads


@pytest.mark.parametrize(("env", "threads"), [("3", 3), ("1", 1), ("0", 2), ("many", 2), ("", 2)])
def test_ndup_torch_threads_overrides_the_network_threads_when_it_is_a_positive_number(monkeypatch, env, threads):
    monkeypatch.setenv("NDUP_TORCH_THREADS", env)
    assert torch_threads(4) == threads


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_the_cpu_network_reuses_freed_memory_instead_of_faulting_in_new_pages():
    """A batch's activations (here one 200 MB array) are freed and allocated again for the next batch;
    with glibc told to keep them (ndup.heap), the next batch touches no new pages."""
    code = (
        "import resource, numpy as np\n"
        "from ndup.heap import keep_freed_memory\n"
        "assert keep_freed_memory()\n"
        "def batch():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    a = np.ones(50_000_000, np.float32)\n"
        "    del a\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(*[batch() for _ in range(3)])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    first, *later = map(int, r.stdout.split())
    assert first > 50 and max(later) <= first // 10, (first, later)
