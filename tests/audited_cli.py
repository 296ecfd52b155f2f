"""`weightspace ARGS` with a record of what this process writes under a folder.

usage: python audited_cli.py LOG ROOT ARGS... [+ ARGS...]...

Runs weightspace.cli.main(ARGS) for each command (separated by "+"), one
after another in this process, and writes to LOG (JSON) their exit statuses
and every file or directory under ROOT that the process created, opened for
writing, renamed or removed: the multi-process tests check that only
process 0 writes files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


class WriteAudit:
    """Records the files and directories this process creates, opens for
    writing, renames or removes under `root` (Python's audit events: open,
    os.mkdir, os.rename, os.remove, os.rmdir, shutil.rmtree, os.truncate).
    Writes made in C++ (orbax's array shards, through tensorstore) are not
    seen."""

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root: Path):
        self.root = str(root.absolute())
        self.events: list[tuple[str, str]] = []
        sys.addaudithook(self._hook)

    def _under(self, path) -> str | None:
        try:
            path = os.path.abspath(os.fsdecode(path))
        except TypeError:  # a file descriptor
            return None
        return path if path.startswith(self.root) else None

    def _hook(self, event: str, args) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (any(c in mode for c in "wax+") if isinstance(mode, str)
                      else bool(flags & self.WRITE_FLAGS))
            if writes and (p := self._under(path)):
                self.events.append((event, p))
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            if (p := self._under(args[0])):
                self.events.append((event, p))
        elif event == "os.rename":
            for path in args[:2]:
                if (p := self._under(path)):
                    self.events.append((event, p))


def main(log: str, root: str, argv: list[str]) -> int:
    audit = WriteAudit(Path(root))
    from weightspace.cli import main as weightspace

    commands = [[]]
    for arg in argv:
        if arg == "+":
            commands.append([])
        else:
            commands[-1].append(arg)
    codes = []
    for command in commands:
        codes.append(weightspace(command))
        if codes[-1] != 0:
            break
    events = list(audit.events)
    with open(log, "w") as f:
        json.dump({"codes": codes, "writes": events}, f)
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
