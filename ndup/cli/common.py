"""The Typer app, options shared by every command, and the one place errors become exit codes."""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.completion import completion_init
from typer.core import TyperGroup

from ndup import __version__
from ndup.config import DB_ENV, cache_dir
from ndup.errors import ExitCode, NdupError

# The order `ndup --help` lists commands in: the daily path first, then the tools.
COMMAND_ORDER = (
    "scan",
    "groups",
    "plan",
    "review",
    "apply",
    "undo",
    "history",
    "config",
    "train",
    "eval",
    "explain",
    "doctor",
    "cache",
)


class OrderedGroup(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER), n))


app = typer.Typer(
    cls=OrderedGroup,
    name="ndup",
    help="Find duplicate and near-duplicate photos, review them, and clean up safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Shell completion (`_NDUP_COMPLETE=complete_bash ndup`, what the scripts in completions/ call) needs
# Typer's completion classes registered; add_completion=False only leaves out --install-completion.
completion_init()

DbOption = Annotated[
    Optional[Path],
    typer.Option(
        "--db",
        envvar=DB_ENV,
        metavar="PATH",
        help="SQLite cache to use [default: $XDG_CACHE_HOME/ndup/ndup.db, i.e. ~/.cache/ndup/ndup.db].",
        show_default=False,
        show_envvar=True,
    ),
]


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


DeviceOption = Annotated[
    Optional[Device], typer.Option("--device", help="Where the network runs; auto: CUDA, then MPS, then CPU.")
]
WeightsOption = Annotated[
    Optional[Path],
    typer.Option(
        "--weights",
        metavar="PATH",
        help="A model trained with `ndup train` [default: the config file's, else the shipped one].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Write only JSON to stdout (see README for its shape).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ExitCodeOption = Annotated[
    bool, typer.Option("--exit-code", help=f"Exit with {int(ExitCode.DUPLICATES_FOUND)} when duplicates were found.")
]


def db_path(option: Path | None) -> Path:
    """--db (or NDUP_DB), else the config file's [cache] db, else the XDG cache dir."""
    if option:
        return option.expanduser()
    from ndup.config import effective

    return Path(effective()["cache.db"])


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def print_json(doc: dict) -> None:
    """JSON in UTF-8 on stdout. A file name that is not valid UTF-8 carries lone surrogates (os.fsdecode);
    they are written as JSON escapes (\\udce9), which JSON readers take back to the same str, and
    os.fsencode to the name's exact bytes."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    sys.stdout.write(_LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")
    sys.stdout.flush()


def _crash_log(exc: BaseException) -> Path | None:
    try:
        path = cache_dir() / "crash.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"ndup {__version__}: {' '.join(sys.argv)}\n")
            f.write("".join(traceback.format_exception(exc)) + "\n")
        return path
    except OSError:
        return None


def fail(message: str) -> None:
    from ndup.render import error

    error(f"ndup: {message}")


def handle_errors(fn):
    """Run a command body; turn NdupError, Ctrl-C and surprises into one clear line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except NdupError as e:
            fail(f"error: {e}")
            raise typer.Exit(int(e.exit_code)) from None
        except KeyboardInterrupt:
            fail("interrupted; everything finished so far is saved, and the next run carries on from there")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            # stdout was closed early (e.g. `ndup groups | head`): not an error worth a message
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(int(ExitCode.OK)) from None
        except sqlite3.Error as e:  # the cache went bad, or its disk filled up, under the command
            from ndup.store import cache_error

            error = cache_error(None, e)
            fail(f"error: {error}")
            raise typer.Exit(int(error.exit_code)) from None
        except Exception as e:  # a bug: one line for the user, the traceback in a log for the report
            if os.environ.get("NDUP_DEBUG"):
                raise
            log = _crash_log(e)
            where = f"; details in {log}" if log else ""
            fail(f"internal error: {type(e).__name__}: {e}{where} (please report it; NDUP_DEBUG=1 shows the traceback)")
            raise typer.Exit(int(ExitCode.ERROR)) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ndup {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Find duplicate and near-duplicate photos, review them, and clean up safely."""


def main() -> None:
    # A file name that is not valid UTF-8 must never stop a run at a print: whatever text shows it
    # without escaping it first comes out with backslash escapes.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    app(prog_name="ndup")
