"""glibc's malloc, tuned for the CPU network: the only module that calls into the C library directly.

A chunk of 16 images (embed.CPU_CHUNK) puts activations of up to 77 MB through EfficientNet-Lite0.
glibc serves every block over its mmap threshold (at most 32 MB) with a fresh mapping and unmaps it on
free, so every layer of every chunk had the kernel fault in and zero new pages: on a 2-core machine
that was a quarter of the network's time (docs/benchmarks.md). Raising the mmap and trim
thresholds keeps freed blocks in the heap, where the next chunk reuses them. The heap then holds on
to that memory, so `release_freed_memory` gives it back once the network is done, before matching
(whose threads allocate from other arenas and could not reuse it anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # blocks this large are still mmapped; this much free heap is kept, not returned


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (not on macOS, Windows or musl, whose malloc is another)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_memory() -> bool:
    """Ask glibc to keep large freed blocks for reuse; False where there is no glibc or it refuses,
    and then nothing changes."""
    libc = _glibc()
    if libc is None:
        return False
    kept = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1
    return libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1 and kept


def release_freed_memory() -> bool:
    """Return the heap's free memory to the system (malloc_trim); False where there is no glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
