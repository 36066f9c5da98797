"""ndup doctor, ndup cache info / prune / rebuild: the installation and the cache, looked after."""

from __future__ import annotations

from typing import Annotated

import typer

from ndup.cli.common import DbOption, JsonOption, app, db_path, handle_errors, print_json
from ndup.errors import ExitCode, NdupError

cache_app = typer.Typer(help="Look after the cache: what it holds, prune it, rebuild it.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@app.command()
@handle_errors
def doctor(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Check the installation: torch and the device it would use, the model's weights, the cache, the
    config file and the optional image format plugins.

    Exits 1, after saying what, when something a scan needs is missing or broken.
    """
    from ndup.doctor import collect

    doc = collect(db)
    if json_output:
        print_json(doc)
    else:
        from ndup.render import print_doctor, stdout_console

        print_doctor(doc, stdout_console())
    if not doc["ok"]:
        raise typer.Exit(int(ExitCode.ERROR))


@cache_app.command("info")
@handle_errors
def cache_info(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Where the cache is, its size on disk (with SQLite's -wal and -shm files) and what it holds."""
    from ndup.store import cache_report

    doc = cache_report(db_path(db))
    if json_output:
        print_json(doc)
    else:
        from ndup.render import print_cache_info, stdout_console

        print_cache_info(doc, stdout_console())
    _refuse_if_broken(doc)


def _refuse_if_broken(doc: dict) -> None:
    if doc.get("problem"):
        raise NdupError(doc["problem"], hint=doc.get("hint"))


@cache_app.command("prune")
@handle_errors
def cache_prune(
    db: DbOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would go; change nothing.")] = False,
    keep_runs: Annotated[
        int, typer.Option("--keep-runs", metavar="N", min=1, help="Scan runs (and apply runs) to keep.")
    ] = 20,
    json_output: JsonOption = False,
) -> None:
    """Remove what no later run needs: cached files that no longer exist (a disconnected drive's files
    are read again when it is back), embeddings of other models or of contents no file has, and scan
    and apply runs beyond the newest N.

    Plans that apply runs refer to, journals `ndup undo` may still need, review decisions and the
    "not duplicates" list are always kept. The file is compacted afterwards.
    """
    import os

    from ndup.config import effective
    from ndup.doctor import model_in_use
    from ndup.lock import cache_lock
    from ndup.store import Store, cache_report, disk_size

    path = db_path(db)
    if not path.exists():
        raise NdupError(f"there is no cache at {path}", hint="nothing to prune; `ndup scan FOLDER` creates one")
    with cache_lock(path):
        _refuse_if_broken(cache_report(path))
        model = model_in_use(effective())
        before = disk_size(path)
        store = Store.open(path)
        try:
            missing = [p for p in store.cached_paths() if not os.path.lexists(p)]
            removed = store.prune(missing=missing, model_id=model, keep_runs=keep_runs, dry_run=dry_run)
            if not dry_run and any(removed.values()):
                store.vacuum()
        finally:
            store.close()
        after = disk_size(path)
    if json_output:
        print_json({"path": str(path), "dry_run": dry_run, "model_id": model, "removed": removed,
                    "size_before": before, "size_after": after})  # fmt: skip
        return
    from ndup.render import print_note, prune_summary, stdout_console

    if model is None:
        print_note("note: which model scans use cannot be told (no weights file), so every model's embeddings stay")
    stdout_console().print(prune_summary(removed, dry_run, before, after))


@cache_app.command("rebuild")
@handle_errors
def cache_rebuild(
    db: DbOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Start anew even when review decisions or journals cannot be read from the old file."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Start an empty cache, keeping review decisions, the "not duplicates" list and the apply journal
    (so `ndup undo` still works); the old file is kept beside it as CACHE.bak-DATE-TIME.

    The answer to a damaged cache. Everything else is derived from your photos: the next scan reads
    every file again.
    """
    from ndup.lock import cache_lock
    from ndup.store import rebuild

    path = db_path(db)
    with cache_lock(path):
        done = rebuild(path, force=force)
    if json_output:
        print_json(
            {"path": str(done.path), "backup": str(done.backup), "kept": done.kept, "unreadable": done.unreadable}
        )
        return
    from ndup.render import print_note, rebuild_summary, stdout_console

    if done.unreadable:
        tables, reason = ", ".join(done.unreadable), next(iter(done.unreadable.values()))
        print_note(f"note: {tables} could not be read from the old cache ({reason}); the new one starts without them")
    stdout_console().print(rebuild_summary(done))
