"""The CPU network in a process of its own (ndup.model.embed_process), and worker processes that end
with the scan that started them."""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tree, photo, save
from harness import ndup_command

from ndup.errors import NdupError
from ndup.model import device
from ndup.model.embed import Embedder
from ndup.model.embed_process import EmbedderProcess


def test_the_network_process_computes_what_this_one_does_and_its_death_is_a_clear_error():
    pixels = np.stack([np.asarray(photo(940 + i, 256, 256)) for i in range(3)])
    pixels[1] = np.rot90(pixels[1])
    aspects = np.array([1.33, 0.75, 1.0], dtype=np.float32)
    here = Embedder("cpu").embed(pixels, aspects)
    child = EmbedderProcess("cpu")
    try:
        assert child.loaded() == Embedder("cpu").model_id
        there = child.embed(pixels, aspects)
        assert there.keys() == here.keys()
        np.testing.assert_allclose(there["vector"], here["vector"], atol=1e-5)
        assert (there["phash"] == here["phash"]).all() and (there["orientation"] == here["orientation"]).all()
        (pid,) = child._pool._processes  # the one process that holds the network
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
        with pytest.raises(NdupError, match="the process that runs the network ended unexpectedly") as e:
            child.embed(pixels, aspects)
        assert "scan again" in str(e.value)
    finally:
        child.close()


def test_a_loading_error_in_the_network_process_comes_back_with_its_hint(tmp_path):
    child = EmbedderProcess("cpu", tmp_path / "missing.npz")  # loads in the background: no error yet
    try:
        for ask in (child.loaded, lambda: child.embed(np.zeros((1, 224, 224, 3), dtype=np.uint8))):
            with pytest.raises(NdupError, match="weights file not found") as e:
                ask()
            assert e.value.hint == "check --weights, or reinstall ndup"
    finally:
        child.close(kill=True)


def test_the_cpu_is_certain_without_torch_only_on_a_linux_machine_with_no_gpu_driver(monkeypatch):
    files: list[str] = []
    monkeypatch.setattr(device.glob, "glob", lambda pattern: fnmatch.filter(files, pattern))
    monkeypatch.setattr(device.sys, "platform", "linux")
    assert device.cpu_for_certain("cpu") and device.cpu_for_certain("auto")
    assert not device.cpu_for_certain("cuda") and not device.cpu_for_certain("mps")
    files.append("/dev/nvidia0")
    assert not device.cpu_for_certain("auto") and device.cpu_for_certain("cpu")
    files[:] = ["/dev/kfd"]  # an AMD GPU, which ROCm builds of torch call cuda
    assert not device.cpu_for_certain("auto")
    files.clear()
    monkeypatch.setattr(device.sys, "platform", "darwin")  # Apple's GPU needs no device file
    assert not device.cpu_for_certain("auto") and device.cpu_for_certain("cpu")


SCAN_AND_REPORT = textwrap.dedent(
    """
    import json, multiprocessing, sys
    from pathlib import Path
    from ndup.config import ScanSettings
    from ndup.scan import Progress, run_scan

    class Watch(Progress):
        def stage(self, name, total=None):
            if name == "Matching":
                report["processes_at_matching"] = len(multiprocessing.active_children())

    if __name__ == "__main__":
        report = {}
        settings = ScanSettings(
            roots=(Path(sys.argv[1]),), db_path=Path(sys.argv[2]), workers=2, device="cpu", batch_size=int(sys.argv[3])
        )
        plan = run_scan(settings, Watch())
        report["torch_here"] = "torch" in sys.modules
        report["groups"] = sorted(sorted(Path(m.path).name for m in g.members) for g in plan.groups)
        report["embedded"] = plan.summary["embedded"]
        print(json.dumps(report))
    """
)


@pytest.mark.parametrize("batch_size", [32, 2])  # the network started on the first new image; at once
def test_a_cpu_scan_never_loads_torch_in_its_own_process_and_ends_the_network_before_matching(tmp_path, batch_size):
    lib = make_tree(tmp_path)
    script = tmp_path / "scan_and_report.py"
    script.write_text(SCAN_AND_REPORT)
    command = [sys.executable, script, lib, tmp_path / "cache/ndup.db", str(batch_size)]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["embedded"] == 4  # 6 files, two of them byte-identical copies
    assert report["torch_here"] is False
    assert report["processes_at_matching"] == 0  # the decoders and the network have ended
    assert report["groups"] == [["a.jpg", "a.jpg", "a_small.jpg"], ["b.png", "b_copy.png"]]


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever adopted it: it holds no memory)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _holds_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads the process tree from /proc")
def test_a_scan_killed_with_kill_9_leaves_no_process_behind(tmp_path):
    """The decoders and the network's process are the fork server's children, not the scan's: without
    watching for the scan's end they waited for work forever, the network's holding most of a gigabyte."""
    for i in range(60):
        save(photo(700 + i, 320, 240), tmp_path / f"lib/p{i:02d}.jpg", quality=90)
    proc = subprocess.Popen(
        ndup_command("scan", tmp_path / "lib", "--db", tmp_path / "ndup.db", "--workers", "2", "--batch-size", "4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(_holds_torch(pid) for pid in _descendants(proc.pid)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the scan ended before its network process was seen")
            time.sleep(0.05)
        left = _descendants(proc.pid)
        assert len(left) >= 4  # the fork server, two decoders, the network (and the resource tracker)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    lingering = [pid for pid in left if _running(pid)]
    for pid in lingering:  # not to leave them to the rest of the run
        os.kill(pid, signal.SIGKILL)
    assert not lingering
