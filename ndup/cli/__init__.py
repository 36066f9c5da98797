"""The command line: Typer app and commands. Flags -> settings -> pipeline -> rendering and exit codes.

Each command family has a module here; importing this package registers them all on `app`.
Nothing heavy is imported at module level, so `ndup --help` and completion stay instant.
"""

from ndup.cli import apply_cmd, cache_cmd, config_cmd, plan_cmd, review_cmd, scan_cmd  # noqa: F401  (registers them)
from ndup.cli.common import app, main

__all__ = ["app", "main"]
