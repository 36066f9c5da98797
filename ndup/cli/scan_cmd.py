"""ndup scan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ndup.cli import apply_cmd as cron
from ndup.cli.common import (
    DbOption,
    Device,
    ExitCodeOption,
    JsonOption,
    QuietOption,
    WeightsOption,
    app,
    db_path,
    handle_errors,
)
from ndup.cli.plan_cmd import finish_with_plan
from ndup.config import BURST_SECONDS, DEFAULT_PICK, DEFAULT_PREFER

_FROM_CONFIG = "[default: from the config file, else "


def _list_option(flag: str, metavar: str, what: str):
    return typer.Option(
        flag, metavar=metavar, help=f"{what}; repeatable (replaces the config file's list).", show_default=False
    )


@app.command()
@handle_errors
def scan(
    roots: Annotated[
        Optional[list[Path]],
        typer.Argument(
            metavar="[FOLDER]...",
            help="Folders (or files) to scan [default: roots in the config file].",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    hidden: Annotated[
        Optional[bool], typer.Option("--hidden/--no-hidden", help="Include hidden files and folders.")
    ] = None,
    follow_links: Annotated[
        Optional[bool],
        typer.Option("--follow-links/--no-follow-links", help="Follow symbolic links (link loops are detected)."),
    ] = None,
    exclude: Annotated[
        Optional[list[str]], _list_option("--exclude", "GLOB", "Skip names or relative paths matching GLOB")
    ] = None,
    protect: Annotated[
        Optional[list[Path]], _list_option("--protect", "DIR", "Never propose files under DIR for deletion")
    ] = None,
    prefer: Annotated[
        Optional[str],
        typer.Option(
            "--prefer",
            metavar="RULES",
            help="Keeper policy, ordered rules, e.g. resolution,format:raw>heic>png>jpg,size,exif,oldest,"
            f"path:~/Photos/Originals {_FROM_CONFIG}{DEFAULT_PREFER}].",
            show_default=False,
        ),
    ] = None,
    pick: Annotated[
        Optional[str],
        typer.Option(
            "--pick",
            metavar="RULES",
            help=f"Rules that pick the best of similar shots, before --prefer's {_FROM_CONFIG}{DEFAULT_PICK}].",
            show_default=False,
        ),
    ] = None,
    burst_seconds: Annotated[
        Optional[float],
        typer.Option(
            "--burst-seconds",
            min=0,
            help=f"One camera's shots this close are a burst {_FROM_CONFIG}{BURST_SECONDS:g}].",
        ),
    ] = None,
    device: Annotated[
        Optional[Device],
        typer.Option("--device", help=f"Where the network runs; auto: CUDA, then MPS, then CPU {_FROM_CONFIG}auto]."),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", min=0, help=f"Decoding processes; 0 = one per CPU core {_FROM_CONFIG}0]."),
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size",
            min=1,
            help=f"Images read, embedded and saved together (a CPU's network takes 16 at a time) {_FROM_CONFIG}32].",
        ),
    ] = None,
    neighbors: Annotated[
        Optional[int],
        typer.Option("--neighbors", "-k", min=1, help=f"Nearest neighbours checked per image {_FROM_CONFIG}10]."),
    ] = None,
    weights: WeightsOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    exit_code: ExitCodeOption = False,
    apply: Annotated[bool, typer.Option("--apply", help="Then clean up, as `ndup apply` (see --yes).")] = False,
    yes: cron.YesOption = False,
    action: cron.ActionOption = None,
    move_to: cron.MoveToOption = None,
    max_delete: cron.MaxDeleteOption = None,
    tier: cron.TierOption = None,
    log_file: cron.LogFileOption = None,
) -> None:
    """Scan folders for duplicate photos and write a keep/delete plan to the cache.

    A rescan reads only files that are new or changed since the last scan. Flags override the
    config file (see `ndup config show`). With --apply --yes it runs unattended (cron): no prompts,
    no progress bars, one run per cache at a time; --protect then also guards the clean-up.
    """
    from ndup.config import scan_settings
    from ndup.render import RichProgress
    from ndup.scan import run_scan

    given = {
        "cache.db": ("--db", str(db_path(db)) if db else None),
        "scan.hidden": ("--hidden", hidden),
        "scan.follow_links": ("--follow-links", follow_links),
        "scan.exclude": ("--exclude", exclude),
        "scan.protect": ("--protect", [str(p) for p in protect] if protect else None),
        "keeper.prefer": ("--prefer", prefer),
        "keeper.pick": ("--pick", pick),
        "thresholds.burst_seconds": ("--burst-seconds", burst_seconds),
        "run.device": ("--device", device.value if device else None),
        "run.workers": ("--workers", workers),
        "run.batch_size": ("--batch-size", batch_size),
        "thresholds.neighbors": ("--neighbors", neighbors),
        "run.weights": ("--weights", str(weights) if weights else None),
    }
    flags = {key: (value, f"flag {flag}") for key, (flag, value) in given.items() if value is not None}
    settings = scan_settings(roots, flags)
    from ndup.lock import cache_lock

    apply_opts = cron.cron_options(apply=apply, yes=yes, action=action, move_to=move_to, max_delete=max_delete,
                                   tier=tier, protect=settings.protect)  # fmt: skip
    with cron.log_to(log_file), cache_lock(settings.db_path):
        with RichProgress(enabled=None if not (quiet or json_output) else False) as progress:
            plan = run_scan(settings, progress)
        if apply_opts is not None:
            return cron.finish_with_apply(plan, apply_opts, settings.db_path, json_output=json_output)
    finish_with_plan(plan, json_output=json_output, exit_code=exit_code)
