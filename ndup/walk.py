"""Roots -> regular files (stat only). Sorted, so runs are deterministic."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path

from ndup.records import Failure, FileEntry


def _excluded(name: str, relpath: str, excludes: Iterable[str]) -> bool:
    return any(fnmatchcase(name, g) or fnmatchcase(relpath, g) for g in excludes)


def walk(
    roots: Iterable[Path],
    *,
    hidden: bool = False,
    follow_links: bool = False,
    excludes: tuple[str, ...] = (),
) -> Iterator[FileEntry | Failure]:
    """Yield every regular file under `roots` once, and a Failure for each place that could not be read.

    Hidden names (leading dot) are skipped unless `hidden`; symbolic links are skipped unless
    `follow_links`, and then a directory already visited (same device and inode) is not entered
    again, so link loops end. A file reached through several hard links or roots is yielded once.
    `excludes` are glob patterns matched against a name and against its path relative to its root.
    """
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()

    def file_entry(path: str, st: os.stat_result) -> FileEntry | None:
        key = (st.st_dev, st.st_ino)
        if st.st_ino:  # some filesystems report 0: then we cannot tell links apart
            if key in seen_files:
                return None
            seen_files.add(key)
        return FileEntry(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns, dev=st.st_dev, inode=st.st_ino)

    for root in roots:
        root_path = os.path.abspath(os.fspath(root))
        try:
            st = os.stat(root_path)
        except OSError as e:
            yield Failure(root_path, f"cannot read: {e.strerror or e}")
            continue
        if stat.S_ISREG(st.st_mode):
            entry = file_entry(root_path, st)
            if entry:
                yield entry
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        prefix = root_path if root_path.endswith(os.sep) else root_path + os.sep  # "/" is its own prefix
        stack = [root_path]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    children = sorted(it, key=lambda e: e.name)
            except OSError as e:
                yield Failure(directory, f"cannot list folder: {e.strerror or e}")
                continue
            subdirs = []
            for child in children:
                if not hidden and child.name.startswith("."):
                    continue
                # the path below the root, by slicing: os.path.relpath per file was a third of a
                # 100,000-file rescan's walk
                if excludes and _excluded(child.name, child.path[len(prefix) :], excludes):
                    continue
                is_link = False
                try:
                    is_link = child.is_symlink()
                    if is_link and not follow_links:
                        continue
                    st = child.stat(follow_symlinks=True)
                except OSError as e:
                    if is_link:
                        continue  # a dangling link is not a file of the library
                    yield Failure(child.path, f"cannot read: {e.strerror or e}")
                    continue
                if stat.S_ISDIR(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if key not in seen_dirs:
                        seen_dirs.add(key)
                        subdirs.append(child.path)
                elif stat.S_ISREG(st.st_mode):
                    entry = file_entry(child.path, st)
                    if entry:
                        yield entry
            # reversed so that popping visits subfolders in name order
            stack.extend(reversed(subdirs))
