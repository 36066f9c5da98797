"""ndup groups / ndup plan show: the latest plan, from the cache, without rescanning."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ndup.cli.common import DbOption, ExitCodeOption, JsonOption, app, db_path, handle_errors, print_json
from ndup.errors import ExitCode
from ndup.records import Plan

plan_app = typer.Typer(help="Show the keep/delete plans stored in the cache.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")

RunOption = Annotated[
    Optional[int], typer.Option("--run", metavar="ID", help="Show this run's plan [default: the latest].")
]


def finish_with_plan(plan: Plan, *, json_output: bool, exit_code: bool) -> None:
    """Print a plan (JSON or table) and exit with the documented code."""
    if json_output:
        from ndup.report import plan_to_json

        print_json(plan_to_json(plan))
    else:
        from ndup.render import print_plan, stdout_console

        print_plan(plan, stdout_console())
    if exit_code and any(g.tier in ("exact", "copy") for g in plan.groups):
        raise typer.Exit(int(ExitCode.DUPLICATES_FOUND))


def _show(db, run: int | None, json_output: bool, exit_code: bool) -> None:
    from ndup.store import Store

    with Store.open(db_path(db)) as store:
        plan = store.require_plan(run)
    finish_with_plan(plan, json_output=json_output, exit_code=exit_code)


@app.command()
@handle_errors
def groups(
    db: DbOption = None,
    run: RunOption = None,
    json_output: JsonOption = False,
    exit_code: ExitCodeOption = False,
) -> None:
    """Show the duplicate groups of the latest scan (same as `ndup plan show`)."""
    _show(db, run, json_output, exit_code)


@plan_app.command("show")
@handle_errors
def plan_show(
    db: DbOption = None,
    run: RunOption = None,
    json_output: JsonOption = False,
    exit_code: ExitCodeOption = False,
) -> None:
    """Show the keep/delete plan of the latest scan (or of --run ID)."""
    _show(db, run, json_output, exit_code)
