"""ndup config show: the effective settings and where each one came from."""

from __future__ import annotations

import typer

from ndup.cli.common import JsonOption, app, handle_errors, print_json

config_app = typer.Typer(
    help="Show the settings ndup runs with (config file, environment, defaults).", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("show")
@handle_errors
def config_show(json_output: JsonOption = False) -> None:
    """Print every setting, its value and its source: default, the config file (and line), or env."""
    from ndup.config import SETTINGS, effective

    eff = effective()
    if json_output:
        print_json(
            {
                "config_file": str(eff.file),
                "config_file_found": eff.file_found,
                "settings": {s.key: {"value": eff[s.key], "source": eff.sources[s.key]} for s in SETTINGS},
            }
        )
        return
    from ndup.render import print_settings, stdout_console

    rows = [(s.key, eff[s.key], eff.sources[s.key], s.help) for s in SETTINGS]
    print_settings(rows, eff.file, eff.file_found, stdout_console())
