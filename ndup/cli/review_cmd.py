"""ndup review: decide, group by group, in the terminal."""

from __future__ import annotations

import sys

from ndup.cli.common import DbOption, app, db_path, handle_errors
from ndup.cli.plan_cmd import RunOption
from ndup.errors import ExitCode, NdupError


@app.command()
@handle_errors
def review(db: DbOption = None, run: RunOption = None) -> None:
    """Review the latest plan group by group: pick keepers, accept groups, mark "not duplicates".

    Keys: n/p next/previous group, left/right choose a file, k make it the keeper, space toggle
    keep/delete, a accept the group, x not duplicates (keep all), u reset the group, o open the file,
    q quit. Decisions are saved as they are made; `ndup apply` then acts on the accepted groups.
    """
    from ndup.store import Store

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NdupError(
            "ndup review needs a terminal",
            hint="run it in a terminal; for scripts use `ndup groups --json` and `ndup apply --yes`",
            exit_code=ExitCode.USAGE,
        )
    with Store.open(db_path(db)) as store:
        plan = store.require_plan(run)
        if not plan.groups:
            sys.stdout.write("No duplicate groups to review.\n")
            return
        from ndup.review import run_review

        summary = run_review(store, plan)
    sys.stdout.write(f"{summary}. Decisions are saved; `ndup apply` acts on the accepted groups.\n")
