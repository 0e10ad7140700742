"""Run a command that may finish on its own and record how it ended.

`python -m flowforge_pipeline.stack.run_once EXIT_FILE -- ARGV...` runs ARGV and writes its exit
code to EXIT_FILE. A backfilling generator exits 0 when its range is done; `status` reads the
file to tell "finished" from "crashed" long after `up` (its parent) has gone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


def main(args: list[str]) -> int:
    """Run the command after `--`, record its exit code, and return it."""
    if len(args) < 3 or args[1] != "--":
        print("usage: run_once EXIT_FILE -- ARGV...", file=sys.stderr)
        return 2
    exit_file = Path(args[0])
    exit_file.unlink(missing_ok=True)
    # `down` signals the whole process group: let the child handle it, then record the code.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = subprocess.call(args[2:])
    tmp = exit_file.with_suffix(".tmp")
    tmp.write_text(str(code))
    tmp.replace(exit_file)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
