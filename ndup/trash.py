"""Where a file goes when it is trashed: the freedesktop.org trash (Linux, BSD), else the OS's own trash.

On freedesktop systems ndup implements the spec's move itself instead of calling send2trash: the
journal must record a trashed file's exact destination *before* the file moves, so that `ndup undo`
and a resumed `ndup apply` never have to guess. send2trash chooses the name inside the trash (and
the trash folder) internally and does not return it; here `choose()` picks the name, the journal
records it, `claim()` reserves it the way the spec says (creating the .trashinfo file with O_EXCL),
and ndup.apply moves the file with its crash-safe, never-overwriting move.

Spec (https://specifications.freedesktop.org/trash-spec/latest/): a file goes to the home trash
($XDG_DATA_HOME/Trash) when it is on the same filesystem; otherwise to its filesystem's
`$topdir/.Trash/$uid` (when `.Trash` is a real, sticky folder) or `$topdir/.Trash-$uid`. If no trash
can be made on that filesystem, the home trash is used (apply then copies, verifies and removes).
On macOS and Windows the file goes to the system trash through send2trash; its place there is not
known, so `ndup undo` cannot bring it back by itself (it says so; the system's "put back" can).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

FREEDESKTOP = sys.platform not in ("darwin", "win32")


@dataclass(frozen=True, slots=True)
class TrashSlot:
    files_path: str  # where the file will live inside the trash
    info_path: str  # its .trashinfo
    info_text: str  # what the .trashinfo says (original path, deletion date)


def home_trash() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "Trash"


def _mount_point(path: str) -> str:
    path = os.path.realpath(path)
    dev = os.lstat(path).st_dev
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return path
        try:
            if os.lstat(parent).st_dev != dev:
                return path
        except OSError:
            return path
        path = parent


def _usable(folder: Path) -> bool:
    try:
        (folder / "files").mkdir(parents=True, exist_ok=True, mode=0o700)
        (folder / "info").mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.access(folder / "files", os.W_OK) and os.access(folder / "info", os.W_OK)
    except OSError:
        return False


def trash_dir_for(path: str) -> tuple[Path, str | None]:
    """The trash folder for a file, and the topdir that .trashinfo paths are relative to (None: absolute)."""
    home = home_trash()
    st_dev = os.lstat(path).st_dev
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.stat(home).st_dev == st_dev:
        return home, None
    top = _mount_point(os.path.dirname(os.path.abspath(path)))
    uid = str(os.getuid())
    shared = Path(top) / ".Trash"
    try:
        st = os.lstat(shared)
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and _usable(shared / uid):
            return shared / uid, top
    except OSError:
        pass
    own = Path(top) / f".Trash-{uid}"
    try:
        own.mkdir(mode=0o700, exist_ok=True)
        if not os.path.islink(own) and _usable(own):
            return own, top
    except OSError:
        pass
    return home, None  # no trash on that filesystem: the home trash (a copy across filesystems)


def choose(path: str) -> TrashSlot:
    """A free name in the right trash for `path`; nothing is created yet."""
    folder, topdir = trash_dir_for(path)
    _usable(folder)
    name = os.path.basename(path)
    stem, ext = os.path.splitext(name)
    original = os.path.relpath(path, topdir) if topdir else os.path.abspath(path)
    when = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    # the spec's Path is the name's bytes, percent-encoded (as they are, even when they are not UTF-8)
    text = f"[Trash Info]\nPath={quote(os.fsencode(original), safe='/')}\nDeletionDate={when}\n"
    n = 1
    while True:
        candidate = name if n == 1 else f"{stem}.{n}{ext}"
        files_path = folder / "files" / candidate
        info_path = folder / "info" / f"{candidate}.trashinfo"
        if not os.path.lexists(files_path) and not os.path.lexists(info_path):
            return TrashSlot(str(files_path), str(info_path), text)
        n += 1


def claim(slot: TrashSlot) -> bool:
    """Reserve the slot by creating its .trashinfo exclusively; False if someone took the name first."""
    try:
        fd = os.open(slot.info_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(slot.info_text)
        f.flush()
        os.fsync(f.fileno())
    return True


def release(info_path: str | None) -> None:
    """Remove a .trashinfo whose file is not (or no longer) in the trash."""
    if info_path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(info_path)


def send_to_system_trash(path: str) -> None:
    """macOS and Windows: the OS's trash, through send2trash."""
    from send2trash import send2trash

    send2trash(path)
