"""`python tests/reaper.py RSS_FILE COMMAND...`: run COMMAND and wait for every process it leaves behind.

A child subreaper (Linux): a process whose parent ends becomes ours, so every descendant of COMMAND is
waited for here, and RUSAGE_CHILDREN's ru_maxrss is then the peak memory of the biggest of them all
(KiB), written to RSS_FILE. Exits with COMMAND's status as a shell reports it. Imports nothing heavy:
harness.run_ndup runs every command through it.
"""

import ctypes
import os
import resource
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def main(rss_file: str, command: list[str]) -> int:
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = subprocess.Popen(command)
    status = 0
    while True:
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child.pid:
            status = st
    with open(rss_file, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
