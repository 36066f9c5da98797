"""The CPU network in a process of its own (ndup.model.embed_process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import make_tree, photo

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
        assert child.model_id == Embedder("cpu").model_id
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
    with pytest.raises(NdupError, match="weights file not found") as e:
        EmbedderProcess("cpu", tmp_path / "missing.npz")
    assert e.value.hint == "check --weights, or reinstall ndup"


def test_the_cpu_is_certain_without_torch_only_on_a_linux_machine_with_no_gpu_driver(monkeypatch):
    files: list[str] = []
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [f for f in files if f.startswith(pattern[:8])])
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
        settings = ScanSettings(roots=(Path(sys.argv[1]),), db_path=Path(sys.argv[2]), workers=2, device="cpu")
        plan = run_scan(settings, Watch())
        report["torch_here"] = "torch" in sys.modules
        report["groups"] = sorted(sorted(Path(m.path).name for m in g.members) for g in plan.groups)
        report["embedded"] = plan.summary["embedded"]
        print(json.dumps(report))
    """
)


def test_a_cpu_scan_never_loads_torch_in_its_own_process_and_ends_the_network_before_matching(tmp_path):
    lib = make_tree(tmp_path)
    script = tmp_path / "scan_and_report.py"
    script.write_text(SCAN_AND_REPORT)
    ran = subprocess.run(
        [sys.executable, script, lib, tmp_path / "cache/ndup.db"], capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["embedded"] == 4  # 6 files, two of them byte-identical copies
    assert report["torch_here"] is False
    assert report["processes_at_matching"] == 0  # the decoders and the network have ended
    assert report["groups"] == [["a.jpg", "a.jpg", "a_small.jpg"], ["b.png", "b_copy.png"]]
