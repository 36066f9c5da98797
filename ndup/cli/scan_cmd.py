"""ndup scan."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ndup.cli import apply_cmd as cron
from ndup.cli.common import DbOption, ExitCodeOption, JsonOption, QuietOption, app, db_path, handle_errors
from ndup.cli.plan_cmd import finish_with_plan


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


@app.command()
@handle_errors
def scan(
    roots: Annotated[list[Path], typer.Argument(help="Folders (or files) to scan.", show_default=False)],
    db: DbOption = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Include hidden files and folders.")] = False,
    follow_links: Annotated[
        bool, typer.Option("--follow-links", help="Follow symbolic links (link loops are detected).")
    ] = False,
    exclude: Annotated[
        Optional[list[str]],
        typer.Option(
            "--exclude",
            metavar="GLOB",
            help="Skip names or relative paths matching GLOB; repeatable.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        Device, typer.Option("--device", help="Where the network runs; auto: CUDA, then MPS, then CPU.")
    ] = Device.auto,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decoding processes; 0 = one per CPU core.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per network batch.")] = 32,
    neighbors: Annotated[
        int, typer.Option("--neighbors", "-k", min=1, help="Nearest neighbours checked per image.")
    ] = 10,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
    exit_code: ExitCodeOption = False,
    apply: Annotated[bool, typer.Option("--apply", help="Then clean up, as `ndup apply` (see --yes).")] = False,
    yes: cron.YesOption = False,
    action: cron.ActionOption = None,
    move_to: cron.MoveToOption = None,
    max_delete: cron.MaxDeleteOption = None,
    tier: cron.TierOption = None,
    protect: cron.ProtectOption = None,
    log_file: cron.LogFileOption = None,
) -> None:
    """Scan folders for duplicate photos and write a keep/delete plan to the cache.

    A rescan reads only files that are new or changed since the last scan. With --apply --yes it
    runs unattended (cron): no prompts, no progress bars, one run per cache at a time.
    """
    from ndup.config import ScanSettings
    from ndup.render import RichProgress
    from ndup.scan import run_scan

    settings = ScanSettings(
        roots=tuple(roots),
        db_path=db_path(db),
        hidden=hidden,
        follow_links=follow_links,
        excludes=tuple(exclude or ()),
        device=device.value,
        workers=workers,
        batch_size=batch_size,
        neighbors=neighbors,
    )
    from ndup.lock import cache_lock

    apply_opts = cron.cron_options(apply=apply, yes=yes, action=action, move_to=move_to, max_delete=max_delete,
                                   tier=tier, protect=protect)  # fmt: skip
    with cron.log_to(log_file), cache_lock(settings.db_path):
        with RichProgress(enabled=None if not (quiet or json_output) else False) as progress:
            plan = run_scan(settings, progress)
        if apply_opts is not None:
            return cron.finish_with_apply(plan, apply_opts, settings.db_path, json_output=json_output)
    finish_with_plan(plan, json_output=json_output, exit_code=exit_code)
