"""ndup apply, ndup undo, ndup history; and the options `ndup scan --apply` shares with apply (cron mode)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ndup.cli.common import DbOption, JsonOption, app, db_path, handle_errors, print_json
from ndup.errors import ExitCode, NdupError


class Action(StrEnum):
    trash = "trash"
    move = "move"
    hardlink = "hardlink"
    symlink = "symlink"
    delete = "delete"


class TierName(StrEnum):
    exact = "exact"
    copy = "copy"
    similar = "similar"


def _option(*flags: str, help: str, metavar: str | None = None, **kw):
    return typer.Option(*flags, metavar=metavar, help=help, show_default=False, **kw)


YesOption = Annotated[
    bool,
    _option("--yes", "-y", help="Carry out the proposed plan (decisions made in review still win), without asking."),
]
ActionOption = Annotated[Optional[Action], _option("--action", help="What happens to each duplicate [default: trash].")]
MoveToOption = Annotated[
    Optional[Path],
    _option("--move-to", metavar="DIR",
            help="Move duplicates into DIR, keeping their paths relative to the scanned folders; never overwrites."),
]  # fmt: skip
TierOption = Annotated[
    Optional[list[TierName]],
    _option("--tier", metavar="TIER",
            help="exact, copy or similar: tiers that act; repeatable [default: exact and copy; similar only if named]."),
]  # fmt: skip
ProtectOption = Annotated[
    Optional[list[Path]],
    _option("--protect", metavar="DIR",
            help="Never touch files under DIR; repeatable, added to the config file's [scan] protect."),
]  # fmt: skip
MaxDeleteOption = Annotated[
    Optional[int],
    _option("--max-delete", metavar="N", min=0,
            help=f"Refuse (exit {int(ExitCode.OVER_LIMIT)}, touching nothing) if more than N files would be acted on."),
]  # fmt: skip
LogFileOption = Annotated[
    Optional[Path], _option("--log-file", metavar="PATH", help="Append what happens to PATH (with timestamps).")
]


def resolve_action(
    action: Action | None, move_to: Path | None, hardlink: bool = False, symlink: bool = False, delete: bool = False
) -> str:
    chosen = {a for a, on in (("hardlink", hardlink), ("symlink", symlink), ("delete", delete)) if on}
    if move_to is not None:
        chosen.add("move")
    if action is not None:
        chosen.add(action.value)
    if len(chosen) > 1:
        raise NdupError(
            f"choose one action, not {' and '.join(sorted(chosen))}",
            hint="one of --move-to DIR, --hardlink, --symlink, --delete (default: trash)",
            exit_code=ExitCode.USAGE,
        )
    name = chosen.pop() if chosen else "trash"
    if name == "move" and move_to is None:
        raise NdupError("--action move needs --move-to DIR", hint="name the folder to move duplicates into",
                        exit_code=ExitCode.USAGE)  # fmt: skip
    return name


def apply_options(
    *,
    action: str,
    move_to: Path | None,
    tiers: list[TierName] | None,
    protect: tuple[str, ...],
    yes: bool,
    dry_run: bool,
    max_delete: int | None,
    plan_run: int | None = None,
):
    """Validated ApplyOptions; `protect`: every folder apply must leave alone."""
    from ndup.apply import DEFAULT_TIERS, ApplyOptions

    if action == "delete" and not yes and not dry_run:
        raise NdupError(
            "--delete removes files permanently and needs --yes",
            hint="add --yes, or use the default (trash) so `ndup undo` can bring files back",
            exit_code=ExitCode.USAGE,
        )
    return ApplyOptions(
        action=action,
        move_to=str(move_to.expanduser().absolute()) if move_to else None,
        tiers=tuple(dict.fromkeys(t.value for t in tiers)) if tiers else DEFAULT_TIERS,
        protect=tuple(dict.fromkeys(protect)),
        yes=yes,
        dry_run=dry_run,
        max_delete=max_delete,
        plan_run=plan_run,
    )


class _LogFile(logging.FileHandler):
    """The --log-file handler: a line that cannot be written (a full disk) is lost, never a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextmanager
def log_to(path: Path | None) -> Iterator[None]:
    """Append the run's log lines (and the error that ends it, if one does) to `path`."""
    if path is None:
        yield
        return
    logger = logging.getLogger("ndup")
    try:
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(path, encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        raise NdupError(
            f"cannot write the log file {path}: {e.strerror or e}", hint="choose another --log-file"
        ) from None
    handler.setFormatter(logging.Formatter("%(asctime)s ndup[%(process)d] %(levelname)s %(message)s"))
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    except NdupError as e:
        logger.error("error: %s", e)
        raise
    except KeyboardInterrupt:
        logger.error("interrupted")
        raise
    except Exception as e:
        logger.error("internal error: %s: %s", type(e).__name__, e)
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def carry_out(db: Path, opts, *, json_output: bool):
    """Run apply on the cache `db`, with per-file lines on a terminal (nothing, for --json); returns the report."""
    from ndup.apply import run_apply
    from ndup.render import print_note, print_result, stdout_console
    from ndup.store import Store

    console = None if json_output else stdout_console()
    with Store.open(db, check=not opts.dry_run) as store:
        report = run_apply(store, opts, echo=(lambda r: print_result(r, console)) if console else (lambda r: None))
    if console is not None:
        from ndup.render import apply_summary

        for line in report.recovered:
            print_note(line)
        if report.note:
            print_note(report.note)
        if report.results or not report.note:
            console.print(apply_summary(report))
    return report


def apply_exit_code(report) -> None:
    if report.count("failed"):
        raise typer.Exit(int(ExitCode.INCOMPLETE))


@app.command("apply")
@handle_errors
def apply_command(
    db: DbOption = None,
    yes: YesOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Print exactly what would happen; change nothing.")] = False,
    move_to: MoveToOption = None,
    hardlink: Annotated[bool, typer.Option("--hardlink", help="Replace each identical copy by a hard link to its keeper.")] = False,
    symlink: Annotated[bool, typer.Option("--symlink", help="Replace each identical copy by a symbolic link to its keeper.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Delete permanently (cannot be undone; needs --yes).")] = False,
    action: ActionOption = None,
    tier: TierOption = None,
    protect: ProtectOption = None,
    max_delete: MaxDeleteOption = None,
    run: Annotated[Optional[int], typer.Option("--run", metavar="ID", help="Use this scan's plan [default: the latest].")] = None,
    json_output: JsonOption = False,
    log_file: LogFileOption = None,
) -> None:  # fmt: skip
    """Clean up: move the duplicates of accepted groups (or, with --yes, of the whole plan) to the trash.

    Every file and its keeper are checked unchanged since the scan first; every action is journaled,
    so an interrupted apply carries on when run again and `ndup undo` puts files back.
    """
    from ndup.config import effective
    from ndup.lock import cache_lock

    name = resolve_action(action, move_to, hardlink, symlink, delete)
    folders = tuple(os.path.abspath(p.expanduser()) for p in protect or ()) + tuple(effective()["scan.protect"])
    opts = apply_options(action=name, move_to=move_to, tiers=tier, protect=folders, yes=yes, dry_run=dry_run,
                         max_delete=max_delete, plan_run=run)  # fmt: skip
    path = db_path(db)
    with log_to(log_file), cache_lock(path) if not dry_run else _nothing():
        report = carry_out(path, opts, json_output=json_output)
    if json_output:
        from ndup.report import apply_to_json

        print_json(apply_to_json(report))
    apply_exit_code(report)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@app.command("undo")
@handle_errors
def undo_command(
    apply_run: Annotated[
        Optional[int],
        typer.Argument(metavar="[RUN]", help="The apply run to undo [default: the latest].", show_default=False),
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    log_file: LogFileOption = None,
) -> None:
    """Put back every file an apply run trashed or moved, and restore files it replaced by links.

    Restored files are checked against the hash recorded before they were touched.
    """
    from ndup.apply import run_undo
    from ndup.lock import cache_lock
    from ndup.render import print_note, print_result, stdout_console
    from ndup.store import Store

    path = db_path(db)
    console = None if json_output else stdout_console()
    with log_to(log_file), cache_lock(path), Store.open(path, check=True) as store:
        report = run_undo(
            store, apply_run, echo=(lambda r: print_result(r, console, undo=True)) if console else (lambda r: None)
        )
    if json_output:
        from ndup.report import undo_to_json

        print_json(undo_to_json(report))
    else:
        for line in report.recovered:
            print_note(line)
        console.print(
            f"undo of apply run {report.apply_id}: {report.count('done')} files restored"
            + (f", {report.count('failed')} could not be restored" if report.count("failed") else "")
        )
    if report.count("failed"):
        raise typer.Exit(int(ExitCode.INCOMPLETE))


@app.command("history")
@handle_errors
def history_command(db: DbOption = None, json_output: JsonOption = False) -> None:
    """List apply runs (their ids are what `ndup undo RUN` takes)."""
    from ndup.store import Store

    with Store.open(db_path(db)) as store:
        runs = store.apply_runs()
    if json_output:
        from ndup.report import history_to_json

        print_json({"apply_runs": history_to_json(runs)})
    else:
        from ndup.render import print_history, stdout_console

        print_history(runs, stdout_console())


# ---- ndup scan --apply (cron mode) -----------------------------------------------------------------


def cron_options(*, apply: bool, yes: bool, action, move_to, max_delete, tier, protect: tuple[str, ...]):
    """Validate `ndup scan`'s apply options before the scan starts; None when --apply was not given."""
    if not apply:
        if yes or action or move_to or max_delete is not None or tier:
            raise NdupError("--yes, --action, --move-to, --max-delete and --tier need --apply",
                            hint="add --apply to clean up after the scan", exit_code=ExitCode.USAGE)  # fmt: skip
        return None
    name = resolve_action(action, move_to)
    return apply_options(action=name, move_to=move_to, tiers=tier, protect=protect, yes=yes, dry_run=False,
                         max_delete=max_delete)  # fmt: skip


def finish_with_apply(plan, opts, db: Path, *, json_output: bool) -> None:
    """After `ndup scan --apply`: apply the fresh plan (the caller holds the lock) and report both."""
    from dataclasses import replace

    opts = replace(opts, plan_run=plan.run_id)
    if not json_output:
        from ndup.render import stdout_console, summary_line

        stdout_console().print(summary_line(plan))
    logging.getLogger("ndup").info("scan run %s: %s", plan.run_id, plan.summary)
    report = carry_out(db, opts, json_output=json_output)
    if json_output:
        from ndup.report import apply_to_json, plan_to_json

        print_json({**plan_to_json(plan), "apply": apply_to_json(report)})
    apply_exit_code(report)
