"""`python -m ndup`, and the `ndup` command."""

import signal
import sys


def run() -> None:
    # Ctrl-C before a command has started (while Python modules load, while the command line is
    # parsed): nothing was done, so nothing to say; a command's own Ctrl-C is handled in cli.common.
    try:
        from ndup.cli import main

        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        # The command is over, whatever its outcome. What is left is Python's own teardown (freeing torch
        # takes up to a second), during which Python puts Ctrl-C back to the default: the process would
        # die of it, without a line and without the command's exit status. Nothing is left to interrupt.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    run()
