"""One ndup run at a time per cache: an exclusive, non-blocking lock on `<cache>.lock`.

`ndup scan`, `ndup apply` and `ndup undo` hold it for their whole run, so a cron job that starts
while the previous one (or a person's apply) is still going exits at once with `ExitCode.LOCKED`
instead of working on a plan that is changing under it. The lock is an OS file lock (flock on
POSIX, msvcrt on Windows): it is released when the process ends, however it ends (even kill -9),
so a stale lock file never blocks anyone. The file keeps the holder's pid for the error message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ndup.errors import ExitCode, NdupError


def lock_path(db_path: Path) -> Path:
    return Path(str(Path(db_path).expanduser()) + ".lock")


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.read(fd, 32).decode("ascii", "replace").strip()
        return f" (pid {pid})" if pid.isdigit() else ""
    except OSError:
        return ""


@contextmanager
def cache_lock(db_path: Path) -> Iterator[None]:
    """Hold the cache's lock for the duration of the block, or raise NdupError(LOCKED) at once."""
    path = lock_path(db_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # the same words as Store.open, which would fail next
        raise NdupError(
            f"cannot create the cache folder {path.parent}: {e.strerror or e}",
            hint="choose another location with --db PATH or NDUP_DB",
        ) from None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise NdupError(
            f"cannot create the lock file {path}: {e.strerror or e}", hint="check the cache folder's permissions"
        ) from None
    try:
        if not _try_lock(fd):
            raise NdupError(
                f"another ndup run is using {Path(db_path).expanduser()}{_holder(fd)}",
                hint="wait for it to finish; a crashed run releases the lock by itself",
                exit_code=ExitCode.LOCKED,
            )
        try:  # the pid is only for the message above: a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file stays, so no two runs can race to recreate it
