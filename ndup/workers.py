"""Worker processes: `decode.analyze` over many files, in order, with bounded memory (`ordered_map`),
and the pool the CPU network's own process comes from (`worker_pool`)."""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone (or another user's process took its number)
        return False
    return True


def _exit_when_gone(parent: int) -> None:
    """Block until process `parent` has ended, then end this one."""
    try:
        handle = os.pidfd_open(parent)  # Linux 5.3+: readable once the process has ended
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # macOS, older kernels: ask every second
        while _exists(parent):
            time.sleep(1)
        os._exit(1)
    select.select([handle], [], [])
    os._exit(1)


def _worker_init(parent: int) -> None:
    # Ctrl-C goes to the whole process group; only the parent decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker is the fork server's child, not the scan's: after a kill -9 of the scan it would wait
    # for work forever, holding its memory (the network's process, most of a gigabyte). It ends with
    # the scan instead; it holds nothing that is the user's.
    # Not on Windows, where os.kill(pid, 0) would send the scan a Ctrl-C (a watch there would wait on
    # a process handle; not done, and untested).
    if os.name != "nt":
        threading.Thread(target=_exit_when_gone, args=(parent,), name="ndup-parent-watch", daemon=True).start()
    # C libraries (libtiff above all) print warnings about damaged files straight to stderr, where they
    # would break the one-line-per-problem output; a worker's results and errors come back as values.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


# What the decoding processes import (numpy, Pillow, imagehash and SciPy's FFT, about 0.4 s of CPU):
# the fork server imports it once, and every worker it starts has it ("__main__" is the default).
PRELOAD = ("__main__", "ndup.decode", "imagehash", "scipy.fftpack")


def _context():
    # forkserver/spawn: workers start clean, without the parent's torch threads and memory.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # read when the fork server starts, once per process
    return context


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Processes that start clean, ignore Ctrl-C and keep their C libraries' chatter off the terminal."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(), initializer=_worker_init, initargs=(os.getpid(),)
    )


def _alive() -> bool:
    return True


def close_pool(pool: ProcessPoolExecutor, kill: bool = False) -> None:
    """Shut a pool down; with `kill`, without waiting for the work in hand (its workers must hold
    nothing that is not theirs). A broken pool is not waited on either: before Python 3.12 a worker
    that outlived the crash can block forever on the pool's queue, and the pool's own shutdown waits
    for it (CPython gh-94777), so its workers are killed first (they read files or run the network,
    nothing else)."""
    if not kill and not getattr(pool, "_broken", False):
        pool.shutdown(wait=True, cancel_futures=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.join(timeout=10)


def submit_to(pool: ProcessPoolExecutor, fn: Callable, *args) -> Future:
    """pool.submit, or, when the pool has broken meanwhile, a future that says so."""
    try:
        return pool.submit(fn, *args)
    except BrokenProcessPool as e:
        fut: Future = Future()
        fut.set_exception(e)
        return fut


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    in_flight: int = 64,
    crashed: Callable[[T], R] | None = None,
) -> Iterator[R]:
    """Like map(), in worker processes when workers > 1; at most `in_flight` results wait in memory.

    A worker that dies (a decoder that crashes on a hostile file, the kernel's OOM killer) breaks the
    pool: then a new pool is started, and the item first in line is tried again on its own. If that
    kills a worker too, `crashed(item)` stands for its result (without `crashed`, BrokenProcessPool
    propagates); the items behind it are simply tried again. A new pool that cannot even run a no-op
    is no item's doing: BrokenProcessPool propagates. With one worker, `fn` runs in this process,
    where nothing can be isolated.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = worker_pool(workers)
    pending: deque[tuple[T, Future]] = deque()

    def restart() -> None:
        nonlocal pool
        close_pool(pool)
        pool = worker_pool(workers)
        pool.submit(_alive).result()

    def head() -> R:
        nonlocal pending
        item, fut = pending.popleft()
        try:
            return fut.result()
        except BrokenProcessPool:
            if crashed is None:
                raise
        restart()
        try:
            result = pool.submit(fn, item).result()
        except BrokenProcessPool:
            restart()
            result = crashed(item)
        pending = deque(
            (it, f if f.done() and not f.cancelled() and f.exception() is None else submit_to(pool, fn, it))
            for it, f in pending
        )
        return result

    try:
        for item in items:
            pending.append((item, submit_to(pool, fn, item)))
            if len(pending) >= in_flight:
                yield head()
        while pending:
            yield head()
    finally:
        for _, fut in pending:
            fut.cancel()
        close_pool(pool)
