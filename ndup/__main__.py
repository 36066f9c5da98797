"""`python -m ndup`, and the `ndup` command."""

import sys


def run() -> None:
    # Ctrl-C before a command has started (while Python modules load, while the command line is
    # parsed): nothing was done, so nothing to say; a command's own Ctrl-C is handled in cli.common.
    try:
        from ndup.cli import main

        main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
