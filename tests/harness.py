"""What the hardening tests (issue 7) share: running ndup as a user does and measuring it, a picture
of a folder tree down to every byte, a stand-in for the network, and private mounts where allowed.

NDUP_HARDENING=long makes the tests try more: more fuzz examples, more kill points, 10,000 images.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ndup.apply import sha256_file

LONG = os.environ.get("NDUP_HARDENING", "").lower() == "long"
# Peak memory allowed to a scan (its biggest process: the scan or one of its decoding workers): generous,
# but far below what reading a 1.5 GiB file or decoding a 100,000 x 100,000 image would take. The long
# run's 10,000 images need more: matching holds two vectors per candidate pair (docs/reliability.md).
MAX_RSS_BYTES = (2048 if LONG else 1536) * 2**20


@dataclass
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes
    max_rss: int  # bytes: the peak resident memory of the command and its waited-for children

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8")  # strict: ndup's output is always valid UTF-8

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8")


def ndup_command(*args) -> list[str]:
    return [sys.executable, "-m", "ndup", *(os.fspath(a) if isinstance(a, Path) else str(a) for a in args)]


def run_ndup(*args, prefix: tuple[str, ...] = (), env: dict | None = None, timeout: float = 300) -> Ran:
    """`ndup ARGS` in a subprocess (after `prefix`, e.g. setpriv), with its exit status, output and peak
    memory: that of its biggest process, decoding workers included (which are not ndup's own children
    but the multiprocessing fork server's, and outlive it: on Linux a subreaper collects them all, and
    its RUSAGE_CHILDREN is the figure)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as where:
        rss_file = os.path.join(where, "maxrss")
        if sys.platform == "linux":
            prefix = (sys.executable, str(Path(__file__).with_name("reaper.py")), rss_file, *prefix)
        proc = subprocess.Popen(
            [*prefix, *ndup_command(*args)], stdout=out, stderr=err, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"ndup {args} ran longer than {timeout} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        # Not the reaper's own ru_maxrss: a process started by exec keeps the peak of the one it replaced,
        # here the test process (torch and all), which is no part of ndup's memory.
        if os.path.exists(rss_file):
            with open(rss_file) as f:
                max_rss = int(f.read())
        else:  # not Linux, or the reaper never got to write it: the best figure there is
            max_rss = usage.ru_maxrss
        return Ran(proc.returncode, out.read(), err.read(), max_rss * 1024)


def one_error_line(ran: Ran) -> str:
    """The single `ndup: error: ...` line a failed command must print, and nothing else."""
    assert b"Traceback" not in ran.stderr and b"Traceback" not in ran.stdout, ran.err
    lines = ran.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ndup: error: "), ran.err
    return lines[0]


def snapshot(root: Path, hash_limit: int = 64 << 20) -> dict[bytes, tuple]:
    """Every entry under `root` by its byte path: kind, and for files size, modification time and SHA-256
    (size only above `hash_limit`), for links the target, for folders the modification time (which moves
    whenever anything is created in or removed from them, even for a moment)."""
    out: dict[bytes, tuple] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
            elif os.path.isfile(path):
                digest = sha256_file(path) if st.st_size <= hash_limit else None
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns, digest)
            else:
                out[rel] = ("special", st.st_mode)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    out[b"."] = ("dir", os.lstat(base).st_mode, os.lstat(base).st_mtime_ns)
    return out


def contents(root: Path) -> dict[bytes, tuple]:
    """What a person owns under `root`: every file (mode, size, modification time, bytes as a hash) and
    link; not the folders' times, which moving files out and back in changes."""
    return {rel: v for rel, v in snapshot(root).items() if v[0] != "dir"}


class PixelEmbedder:
    """Stands in for the network in in-process tests about files rather than matching: the picture's
    coarse colour layout (8 x 8 x 3), so identical files still get identical vectors. Fast, and the
    tests using it hold whatever model ndup ships."""

    def embed(self, pixels: np.ndarray, aspects: np.ndarray | None = None) -> dict[str, np.ndarray]:
        n, side = len(pixels), pixels.shape[1]
        cells = pixels.reshape(n, 8, side // 8, 8, side // 8, 3).mean(axis=(2, 4))
        grey = pixels.reshape(n, 16, side // 16, 16, side // 16, 3).mean(axis=(2, 4, 5))
        return {
            "vector": cells.reshape(n, -1).astype(np.float32),
            "phash": np.zeros(n, dtype=np.uint64),
            "thumb": [t.round().astype(np.uint8) for t in grey],
        }


def pixel_embedder(settings) -> PixelEmbedder:
    return PixelEmbedder()


# ---- privileges ---------------------------------------------------------------------------------------


def without_dac_override() -> tuple[str, ...] | None:
    """A command prefix under which permission bits apply (None: not available here). As an ordinary
    user, nothing is needed; as root (the CI container), setpriv drops the capabilities that let root
    read anything."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def private_mount_prefix() -> tuple[str, ...] | None:
    """`unshare` arguments giving a command its own mount namespace, where it may mount (None: not
    allowed here). Root needs only a mount namespace; others also a user namespace, if the system allows."""
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    with tempfile.TemporaryDirectory() as where:
        for prefix in ((unshare, "--mount", "--propagation", "private"), (unshare, "--map-root-user", "--mount")):
            probe = subprocess.run(
                [*prefix, "mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", where], capture_output=True
            )
            if probe.returncode == 0:
                return prefix
    return None


# ---- decoders that crash ------------------------------------------------------------------------------
# Module-level, so that worker processes can import them by name.


def die() -> None:
    """What a decoder's segmentation fault (or the OOM killer) does to a worker process."""
    os.kill(os.getpid(), signal.SIGKILL)


def double_unless_cursed(x: int) -> int:
    if x % 10 == 7:
        die()
    return 2 * x


def analyze_or_crash(path: str, **options):
    """ndup.decode.analyze, except that files named *crash-me* kill the process reading them."""
    if "crash-me" in os.path.basename(path):
        die()
    from ndup.decode import analyze

    return analyze(path, **options)


def analyze_crashing_off_the_gpu(path: str, defer_jpeg: bool = False, **options):
    """ndup.decode.analyze, except that files named *crash-me* kill the process that decodes them on
    the CPU: they pass the GPU path's first reading (hashed and parsed, not decoded) and crash later."""
    if not defer_jpeg and "crash-me" in os.path.basename(path):
        die()
    from ndup.decode import analyze

    return analyze(path, defer_jpeg=defer_jpeg, **options)
