"""Carrying out a plan, journaled so it can be resumed and undone. The only code that moves, trashes,
links or deletes a user's files.

What is acted on: the groups a person accepted in `ndup review` (or, with `yes`, every group of the
chosen tiers, decisions still winning where they exist), minus the "not duplicates" ignore list.
Before a file is touched:
  * the file and its keeper must still exist and be unchanged since the scan (size, modification
    time and SHA-256), and not be one file (hard links);
  * it must not be the keeper of another group acted on, nor lie under a protected folder;
  * a move never overwrites anything; a link replaces only a file whose bytes equal the keeper's.
Hard and symbolic links replace only byte-identical duplicates: for a copy with different bytes (a
resize, a re-encode) a link would destroy the only copy of those bytes, so such members are skipped
with a reason (trash or --move-to keep them). Undo restores a linked duplicate from the keeper's
bytes, verified against the duplicate's recorded hash.

The journal (Store.journal_*): an entry is committed as "planned" (with its destination) before the
file is touched and set "done" after. A run that dies (Ctrl-C, kill -9, power cut) leaves "planned"
entries, which the next apply or undo reconciles by looking at the filesystem. Every action is
atomic or restartable: a link-then-unlink move (or, across filesystems, copy to a temporary name in
the destination folder, fsync, verify the hash, place without overwriting, then remove the source),
and links made at a temporary name and renamed over the duplicate.

Test hook: NDUP_TEST_ACTION_DELAY=SECONDS sleeps before and after each file's action (inside the
journal's planned/done window), so tests can kill a run in the middle. It is read only here.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

from ndup import trash
from ndup.decisions import GroupView, views
from ndup.errors import ExitCode, NdupError
from ndup.policy import is_under
from ndup.records import JournalEntry
from ndup.store import Store

ACTIONS = ("trash", "move", "hardlink", "symlink", "delete")
DEFAULT_TIERS = ("exact", "copy")
DELAY_ENV = "NDUP_TEST_ACTION_DELAY"  # test hook, see the module docstring
PAST = {"trash": "trashed", "move": "moved", "hardlink": "hard-linked", "symlink": "symlinked", "delete": "deleted"}

log = logging.getLogger("ndup")


@dataclass(frozen=True)
class ApplyOptions:
    action: str = "trash"
    move_to: str | None = None  # with action "move"
    tiers: tuple[str, ...] = DEFAULT_TIERS
    protect: tuple[str, ...] = ()
    yes: bool = False  # act on the proposed plan, not only on accepted groups
    dry_run: bool = False
    max_delete: int | None = None
    plan_run: int | None = None  # None: the latest plan


@dataclass(frozen=True)
class Result:
    """What happened (or, in a dry run, would happen) to one file."""

    group_id: int
    src: str
    keeper: str
    action: str
    state: str  # done | would | skipped | failed | already
    reason: str = ""
    dest: str | None = None
    size: int = 0


@dataclass
class ApplyReport:
    plan_run_id: int
    options: ApplyOptions
    apply_id: int | None = None  # None for a dry run
    resumed: bool = False
    note: str = ""  # why nothing was done, when nothing was
    results: list[Result] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # what reconciling interrupted runs found

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.results)

    @property
    def bytes_done(self) -> int:
        return sum(r.size for r in self.results if r.state in ("done", "would"))


@dataclass
class UndoReport:
    apply_id: int
    results: list[Result] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.results)


@dataclass(frozen=True)
class _Step:
    view: GroupView
    src: str
    dest: str | None
    skip: str | None  # decided before looking at the file


# ---- small filesystem helpers -----------------------------------------------------------------------


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_if_exists(path: str | None) -> None:
    if path and os.path.lexists(path):
        os.unlink(path)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _temp_beside(path: str, apply_id: int, seq: int, what: str = "") -> str:
    return os.path.join(os.path.dirname(path), f".ndup-{what}{apply_id}-{seq}.tmp")


def _copy_verified(src: str, temp: str, expected_hash: str) -> None:
    """Copy src to a new file `temp`, fsynced, with src's mode and times; raise if the bytes are not the expected."""
    h = hashlib.sha256()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(1 << 20):
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if h.hexdigest() != expected_hash:
            raise OSError(errno.EIO, f"the copy of {src} does not match its recorded hash")
    except BaseException:
        _remove_if_exists(temp)
        raise


def _place(temp: str, dest: str) -> None:
    """Give `temp` the name `dest` without ever overwriting what is there."""
    try:
        os.link(temp, dest)  # fails if dest exists: no check-then-act race
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise
        if os.path.lexists(dest):  # a filesystem without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "exists", dest) from None
        os.rename(temp, dest)
    else:
        os.unlink(temp)
    _fsync_dir(os.path.dirname(dest))


def move_file(src: str, dest: str, temp: str, expected_hash: str) -> None:
    """Move a regular file without ever overwriting; safe to interrupt at any point (see reconcile).
    When it raises, `src` is where it was and `dest` does not exist."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, f"{dest} already exists; ndup never overwrites", dest)
    try:
        os.link(src, dest)  # same filesystem: both names, then drop the old one
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise
        if e.errno == errno.EXDEV:
            _copy_verified(src, temp, expected_hash)
            import shutil

            shutil.copystat(src, temp)
            _place(temp, dest)
        else:  # no hard links on this filesystem (FAT, some network shares): a plain rename
            if os.path.lexists(dest):
                raise FileExistsError(errno.EEXIST, "exists", dest) from None
            os.rename(src, dest)
            _fsync_dir(os.path.dirname(dest))
            _fsync_dir(os.path.dirname(src))
            return
    _fsync_dir(os.path.dirname(dest))
    try:
        os.unlink(src)
    except OSError:  # the file cannot leave its folder (read-only filesystem, permissions): no move
        _remove_if_exists(dest)  # a second name of it, or a verified copy: the original is untouched
        raise
    _fsync_dir(os.path.dirname(src))


def _restore_bytes(path: str, source: str, temp: str, entry: JournalEntry) -> None:
    """Replace `path` (a link, or nothing) by a regular file with the original bytes, mode and time."""
    _remove_if_exists(temp)
    _copy_verified(source, temp, entry.content_hash)
    os.chmod(temp, stat.S_IMODE(entry.mode) if entry.mode else 0o644)
    os.utime(temp, ns=(entry.mtime_ns, entry.mtime_ns))
    os.replace(temp, path)
    _fsync_dir(os.path.dirname(path))


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) until the current file's action and its journal entry are finished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum, frame):
        pending.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            raise KeyboardInterrupt


def _test_delay() -> None:
    delay = os.environ.get(DELAY_ENV)
    if delay:
        time.sleep(float(delay))


# ---- choosing what to act on ------------------------------------------------------------------------


def _protected_by(path: str, protect: tuple[str, ...]) -> str | None:
    real = os.path.realpath(path)
    for folder in protect:
        for base in {os.path.abspath(os.path.expanduser(folder)), os.path.realpath(os.path.expanduser(folder))}:
            for p in (os.path.abspath(path), real):
                if is_under(p, base):
                    return folder
    return None


def move_destination(src: str, roots: list[str], move_to: str) -> str:
    """`--move-to DIR`: the file's path relative to the scanned folders, under DIR."""
    bases = [r if os.path.isdir(r) else os.path.dirname(r) for r in roots] or [os.path.dirname(src)]
    try:
        base = os.path.commonpath(bases)
    except ValueError:
        base = ""
    rel = os.path.relpath(src, base) if base and is_under(src, base) else os.path.splitdrive(src)[1].lstrip("/\\")
    return os.path.join(os.path.abspath(os.path.expanduser(move_to)), rel)


def _select(store: Store, plan, opts: ApplyOptions) -> tuple[list[_Step], str]:
    all_views = views(plan, store)
    tiered = [v for v in all_views if v.group.tier in opts.tiers]
    eligible = [v for v in tiered if v.status != "not_duplicates" and (opts.yes or v.status == "accepted")]
    note = ""
    if not eligible:
        if not opts.yes and not any(v.status == "accepted" for v in all_views):
            note = (
                "nothing to do: no group has been accepted in `ndup review` yet "
                "(review and accept groups first, or pass --yes to carry out the proposed plan)"
            )
        elif not tiered:
            note = f"nothing to do: the plan has no {' or '.join(opts.tiers)} group (--tier chooses which tiers act)"
        else:
            note = f"nothing to do: no {' or '.join(opts.tiers)} group is left to act on"
    keepers = {v.keep: v.group.id for v in eligible}
    roots = store.run_roots(plan.run_id) if opts.action == "move" else []
    steps: list[_Step] = []
    for v in eligible:
        for m in v.to_delete():
            skip = None
            folder = _protected_by(m.path, opts.protect)
            if m.path in keepers:
                skip = f"it is the kept file of group {keepers[m.path]}"
            elif folder:
                skip = f"protected (under {folder})"
            elif opts.action in ("hardlink", "symlink") and v.hashes.get(m.path) != v.hashes.get(v.keep):
                skip = (
                    "its bytes differ from the kept file's, so a link would lose them "
                    "(links replace identical copies only; use trash or --move-to for this one)"
                )
            dest = move_destination(m.path, roots, opts.move_to) if opts.action == "move" and opts.move_to else None
            steps.append(_Step(v, m.path, dest, skip))
    if eligible and not steps:
        note = "nothing to do: every file in the chosen groups is kept"
    return steps, note


def _check_move_target(move_to: str | None, roots: list[str]) -> None:
    if not move_to:
        raise NdupError("moving needs a folder", hint="--move-to DIR", exit_code=ExitCode.USAGE)
    target = os.path.realpath(move_to)
    for root in roots:
        real = os.path.realpath(root)
        if is_under(target, real):
            raise NdupError(
                f"--move-to {move_to} is inside the scanned folder {root}",
                hint="choose a folder outside it, or the next scan finds the moved files as duplicates again",
                exit_code=ExitCode.USAGE,
            )


def _changed(path: str, expected: tuple[int, int, str | None] | None, hashes: dict) -> str | None:
    """Why `path` is not the file the scan saw (None: it is)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "no longer exists"
    except OSError as e:
        return f"cannot be checked: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "is no longer a regular file"
    if expected is None or expected[2] is None:
        return "is not in the cache any more (rescan first)"
    if st.st_size != expected[0] or st.st_mtime_ns != expected[1]:
        return "changed since the scan (size or modification time differs; rescan first)"
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in hashes:
        try:
            hashes[key] = sha256_file(path)
        except OSError as e:
            return f"cannot be read: {e.strerror or e}"
    if hashes[key] != expected[2]:
        return "changed since the scan (its contents differ; rescan first)"
    return None


def _check(step: _Step, opts: ApplyOptions, states: dict, hashes: dict) -> str | None:
    keeper = step.view.keep
    why = _changed(step.src, states.get(step.src), hashes)
    if why:
        return why
    why = _changed(keeper, states.get(keeper), hashes)
    if why:
        return f"its keeper {keeper} {why}"
    if _same_file(step.src, keeper):
        return "is the same file as its keeper (a hard link): removing it would free nothing"
    if step.dest and os.path.lexists(step.dest):
        return f"{step.dest} already exists; ndup never overwrites"
    if opts.action == "hardlink" and os.lstat(step.src).st_dev != os.lstat(keeper).st_dev:
        return "is on another filesystem than its keeper; hard links need one filesystem (try --symlink)"
    return None


# ---- carrying it out --------------------------------------------------------------------------------


def _act(store: Store, entry: JournalEntry) -> JournalEntry:
    """Do one journaled action; the entry is already committed as planned."""
    src, dest = entry.src, entry.dest
    _test_delay()
    if entry.action in ("trash", "move"):
        if entry.action == "trash" and not trash.FREEDESKTOP:
            trash.send_to_system_trash(src)
        else:
            move_file(src, dest, entry.temp, entry.content_hash)
    elif entry.action == "delete":
        os.unlink(src)
        _fsync_dir(os.path.dirname(src))
    elif entry.action in ("hardlink", "symlink"):
        _remove_if_exists(entry.temp)
        if entry.action == "hardlink":
            os.link(entry.keeper, entry.temp)
        else:
            os.symlink(entry.keeper, entry.temp)
        try:
            os.replace(entry.temp, src)
        except BaseException:
            _remove_if_exists(entry.temp)
            raise
        _fsync_dir(os.path.dirname(src))
    _test_delay()
    return store.journal_set(entry, "done")


def _plan_entry(store: Store, apply_id: int, step: _Step, opts: ApplyOptions, states: dict) -> JournalEntry:
    seq = store.next_seq(apply_id)
    st = os.lstat(step.src)
    size, mtime_ns, content_hash = states[step.src]
    dest, temp, extra, slot = step.dest, None, None, None
    if opts.action == "trash" and trash.FREEDESKTOP:
        slot = trash.choose(step.src)
        dest, extra = slot.files_path, slot.info_path
    if opts.action in ("trash", "move") and dest:
        temp = _temp_beside(dest, apply_id, seq)
    elif opts.action in ("hardlink", "symlink"):
        temp = _temp_beside(step.src, apply_id, seq)
        dest = step.view.keep
    entry = JournalEntry(apply_id, seq, step.view.group.id, opts.action, step.src, dest, step.view.keep, temp,
                         content_hash, size, mtime_ns, st.st_mode, "planned", "", extra)  # fmt: skip
    entry = store.journal_plan(entry)  # committed before anything is created or touched
    try:
        while slot is not None and not trash.claim(slot):  # the name was taken meanwhile: pick another
            slot = trash.choose(step.src)
            temp = _temp_beside(slot.files_path, apply_id, seq)
            entry = store.journal_set(entry, "planned", dest=slot.files_path, extra=slot.info_path, temp=temp)
    except OSError as e:
        store.journal_set(entry, "failed", f"cannot use the trash: {e.strerror or e}")
        raise
    return entry


def run_apply(store: Store, opts: ApplyOptions, echo: Callable[[Result], None] = lambda r: None) -> ApplyReport:
    """Carry out (or with dry_run, describe) the plan. The caller holds the cache lock unless dry_run."""
    if opts.action not in ACTIONS:
        raise NdupError(
            f"unknown action {opts.action!r}", hint=f"one of {', '.join(ACTIONS)}", exit_code=ExitCode.USAGE
        )
    recovered = [] if opts.dry_run else recover(store)
    plan = store.require_plan(opts.plan_run)
    if opts.action == "move":
        _check_move_target(opts.move_to, store.run_roots(plan.run_id))
    report = ApplyReport(plan_run_id=plan.run_id, options=opts, recovered=recovered)
    steps, report.note = _select(store, plan, opts)
    states = store.file_states({s.src for s in steps} | {s.view.keep for s in steps})
    done_before = store.journal_done_for(s.src for s in steps)

    def already(step: _Step) -> Result | None:
        prior = done_before.get(step.src)
        if prior is None or os.path.lexists(step.src):
            return None
        why = f"already {PAST[prior.action]} by apply run {prior.apply_id}"
        return Result(step.view.group.id, step.src, step.view.keep, prior.action, "already", why, prior.dest)

    todo = [s for s in steps if s.skip is None and already(s) is None]
    if opts.max_delete is not None and len(todo) > opts.max_delete:
        raise NdupError(
            f"the plan would {opts.action} {len(todo)} files, more than --max-delete {opts.max_delete}; nothing was touched",
            hint="check the plan with `ndup groups` or `ndup apply --dry-run`, then raise --max-delete",
            exit_code=ExitCode.OVER_LIMIT,
        )
    hashes: dict = {}
    if not opts.dry_run and todo:
        report.apply_id, report.resumed = _start_run(store, plan.run_id, opts)
        store.durable()
        log.info("apply run %s (%s) of plan %s started", report.apply_id, opts.action, plan.run_id)
    try:
        for step in steps:
            result = already(step)
            if result is None:
                result = _one(store, step, opts, states, hashes, report.apply_id)
            report.results.append(result)
            log.info("%s %s%s", result.state, step.src, f": {result.reason}" if result.reason else "")
            echo(result)
    except BaseException:
        if report.apply_id is not None:
            store.set_apply_status(report.apply_id, "interrupted", _summary(report))
        raise
    if report.apply_id is not None:
        store.set_apply_status(report.apply_id, "done", _summary(report))
        log.info("apply run %s finished: %s", report.apply_id, _summary(report))
    return report


def _one(store: Store, step: _Step, opts: ApplyOptions, states: dict, hashes: dict, apply_id: int | None) -> Result:
    view = step.view
    base = Result(view.group.id, step.src, view.keep, opts.action, "skipped", step.skip or "", step.dest,
                  view.member(step.src).size)  # fmt: skip
    if step.skip:
        return base
    why = _check(step, opts, states, hashes)
    if why:
        return replace(base, reason=why)
    if opts.dry_run:
        dest = view.keep if opts.action in ("hardlink", "symlink") else step.dest
        return replace(base, state="would", dest=dest)
    assert apply_id is not None
    with _no_interrupt():
        try:
            entry = _plan_entry(store, apply_id, step, opts, states)
        except OSError as e:  # e.g. no trash folder can be made: the file was not touched
            where = f": {e.filename}" if e.filename else ""
            return replace(base, state="failed", reason=f"cannot {opts.action} it ({e.strerror or e}{where})")
        try:
            entry = _act(store, entry)
        except FileExistsError as e:  # the destination appeared since the check: nothing was touched
            _remove_if_exists(entry.temp)
            if entry.action == "trash":
                trash.release(entry.extra)
            entry = store.journal_set(
                entry, "failed", f"{e.filename or entry.dest} already exists; ndup never overwrites"
            )
        except OSError as e:
            entry = _settle(store, entry, failed=e.strerror or str(e))
    if entry.state == "done":
        return replace(base, state="done", reason="", dest=entry.dest)
    return replace(base, state="failed" if entry.state == "failed" else "skipped", reason=entry.reason)


def _start_run(store: Store, plan_run_id: int, opts: ApplyOptions) -> tuple[int, bool]:
    """A new apply run, or the interrupted one this continues (same plan and same action)."""
    record = {k: v for k, v in asdict(opts).items() if k not in ("dry_run", "plan_run")}
    runs = store.apply_runs()
    last = runs[-1] if runs else None
    if (
        last is not None
        and last.status == "interrupted"
        and last.plan_run_id == plan_run_id
        and last.action == opts.action
        and last.options.get("move_to") == record["move_to"]
    ):
        store.set_apply_status(last.id, "running")
        log.info("resuming apply run %s", last.id)
        return last.id, True
    return store.begin_apply(plan_run_id, opts.action, record), False


def _summary(report: ApplyReport) -> dict:
    return {
        "done": report.count("done"),
        "skipped": report.count("skipped"),
        "failed": report.count("failed"),
        "already": report.count("already"),
        "bytes": report.bytes_done,
    }


# ---- after a crash: reconcile the journal with the filesystem ---------------------------------------


def _settle(store: Store, e: JournalEntry, failed: str = "") -> JournalEntry:
    """Decide what a "planned" entry's action actually did, clean up after it, and record that."""
    src, dest = e.src, e.dest
    src_there = os.path.lexists(src)
    if e.action in ("trash", "move"):
        if e.action == "trash" and not trash.FREEDESKTOP:
            state = "cancelled" if src_there else "done"
        else:
            dest_there = bool(dest) and os.path.lexists(dest)
            if src_there and dest_there and (_same_file(src, dest) or _hash_is(dest, e.content_hash)):
                try:
                    os.unlink(src)  # it got as far as both names: finish the move
                    _fsync_dir(os.path.dirname(src))
                    state = "done"
                except OSError as err:  # it cannot leave its folder: take the second name or copy back
                    state, failed = "cancelled", failed or f"cannot remove it from its folder ({err.strerror or err})"
                    try:
                        os.unlink(dest)
                    except OSError:
                        failed += f"; a copy was left at {dest}"
                    dest_there = os.path.lexists(dest)
            elif dest_there and not src_there:
                state = "done"
            elif src_there:
                state = "cancelled"
            else:
                state = "failed"
                failed = failed or f"neither {src} nor {dest} exists"
            _remove_if_exists(e.temp)
            if state != "done" and e.action == "trash" and not dest_there:
                trash.release(e.extra)
    elif e.action == "delete":
        state = "cancelled" if src_there else "done"
    else:
        linked = _same_file(src, e.keeper) if e.action == "hardlink" else (
            os.path.islink(src) and os.readlink(src) == e.keeper)  # fmt: skip
        state = "done" if linked else "cancelled"
        _remove_if_exists(e.temp)
    if state == "cancelled" and failed:
        state = "failed"
    reason = failed if state == "failed" else ("" if state == "done" else "interrupted before the file was touched")
    return store.journal_set(e, state, reason)


def _hash_is(path: str, expected: str) -> bool:
    try:
        return sha256_file(path) == expected
    except OSError:
        return False


def recover(store: Store) -> list[str]:
    """Reconcile apply runs that died: status still "running" (the caller holds the lock, so nobody runs
    them), or files still "planned" (a run stopped by Ctrl-C in the middle of one file)."""
    notes = []
    for run in store.apply_runs():
        planned = [e for e in store.journal(run.id) if e.state == "planned"]
        if run.status != "running" and not planned:
            continue
        settled = [_settle(store, e) for e in planned]
        if run.status == "running":
            store.set_apply_status(run.id, "interrupted")
        done = sum(e.state == "done" for e in settled)
        notes.append(
            f"apply run {run.id} was interrupted; its journal is reconciled "
            f"({done} of {len(settled)} unfinished files had been {PAST[run.action]}); "
            f"`ndup apply` carries on, `ndup undo {run.id}` puts files back"
        )
        log.info(notes[-1])
    return notes


# ---- undo --------------------------------------------------------------------------------------------


def default_undo_run(store: Store) -> int:
    for run in reversed(store.apply_runs()):
        if run.status in ("done", "interrupted", "undoing") and any(
            e.state in ("done", "undoing") for e in store.journal(run.id)
        ):
            return run.id
    raise NdupError("nothing to undo: no apply run has changed any file", hint="`ndup history` lists apply runs")


def run_undo(store: Store, apply_id: int | None, echo: Callable[[Result], None] = lambda r: None) -> UndoReport:
    """Put back every file an apply run moved, trashed or replaced by a link. The caller holds the lock."""
    recovered = recover(store)
    if apply_id is None:
        apply_id = default_undo_run(store)
    run = store.apply_run(apply_id)
    if run is None:
        raise NdupError(f"no apply run {apply_id} in this cache", hint="`ndup history` lists apply runs")
    store.durable()
    report = UndoReport(apply_id, recovered=recovered)
    store.set_apply_status(apply_id, "undoing")
    log.info("undo of apply run %s started", apply_id)
    # an interrupted undo leaves the run "undoing": the next `ndup undo` finishes it
    for e in reversed(store.journal(apply_id)):
        if e.state not in ("done", "undoing"):
            continue
        with _no_interrupt():
            if e.state == "done":
                e = store.journal_set(e, "undoing", e.reason)
            try:
                reason = _undo_one(e)
            except OSError as err:
                reason = f"{err.strerror or err}"
            e = store.journal_set(e, "done" if reason else "undone", reason or "")
        result = Result(e.group_id, e.src, e.keeper, e.action, "failed" if reason else "done", reason or "", e.dest)
        report.results.append(result)
        log.info("undo %s %s%s", result.state, e.src, f": {reason}" if reason else "")
        echo(result)
    left = [e for e in store.journal(apply_id) if e.state == "done"]
    store.set_apply_status(apply_id, "partly undone" if left else "undone")
    return report


def _undo_one(e: JournalEntry) -> str | None:
    """Put one file back; idempotent (an interrupted undo is simply run again). Returns why not, or None."""
    src, dest = e.src, e.dest
    if e.action == "delete":
        return "it was deleted permanently (--delete) and cannot be restored"
    if e.action in ("trash", "move"):
        if not dest:
            return "it is in the system trash; put it back from there"
        src_there, dest_there = os.path.lexists(src), os.path.lexists(dest)
        if src_there and dest_there and _same_file(src, dest):
            os.unlink(dest)  # an undo interrupted between its two steps
            dest_there = False
        if src_there and not dest_there:
            if _hash_is(src, e.content_hash):
                if e.action == "trash":
                    trash.release(e.extra)
                return None
            return f"{src} exists again with other contents; nothing to put back"
        if not dest_there:
            return f"{dest} is gone (was the trash emptied?); it cannot be put back"
        if src_there:
            return f"{src} exists again; {dest} was left where it is"
        if not _hash_is(dest, e.content_hash):
            return f"{dest} changed since it was moved there; it was left where it is"
        move_file(dest, src, _temp_beside(src, e.apply_id, e.seq, "undo-"), e.content_hash)
        if e.action == "trash":
            trash.release(e.extra)
        return None
    # a hard or symbolic link replaced the duplicate: give it back its own bytes, from the keeper's
    temp = _temp_beside(src, e.apply_id, e.seq, "undo-")
    if os.path.lexists(src) and not os.path.islink(src) and not _same_file(src, e.keeper):
        _remove_if_exists(temp)
        return None if _hash_is(src, e.content_hash) else f"{src} was replaced by another file; left as it is"
    source = src if os.path.exists(src) else e.keeper
    try:
        _restore_bytes(src, source, temp, e)
    except OSError as err:
        if err.errno == errno.EIO:
            return f"the keeper {e.keeper} no longer has the original bytes; {src} was left as it is"
        raise
    return None
