"""The log every apply and remove leaves: what was asked, each step, every line the
commands printed, and how it ended, appended to ``/var/log/tmpfs-root/tmpfs-root.log``
on this machine (``TMPFS_ROOT_LOG_DIR`` moves it). It is written on the machine running
the tool, never in a ``--root`` target, so ``remove`` still leaves the target as before;
a ``--root`` run says on the console where its log is.

The log is opened as the lock directory is (:func:`tui.safefile.open_private_dir`): its
directory reached from ``/`` without following a symbolic link in any component, made
0700 when missing, and used only when root owns it and nobody else may write in it; the
file opened without following a link and without blocking, appended to (never
truncated), and used only when it is a regular file of root's with one link that nobody
else may write (a FIFO would hang the apply holding the lock; a hard link would append
to another file). A log that cannot be used is not a reason to fail: the work goes on,
and :attr:`TransactionLog.error` says in one line where it would have gone and why
("log not written: /var/log/tmpfs-root/tmpfs-root.log is a FIFO, not a regular file").
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tui.errors import escape
from tui.safefile import FileRefused, open_private_append, open_private_dir

LOG_DIR = "/var/log/tmpfs-root"
LOG_NAME = "tmpfs-root.log"
#: Permission bits group and others must not have on the log's directory and file.
NOBODY_ELSE_WRITES = 0o022


def log_path() -> Path:
    return Path(os.environ.get("TMPFS_ROOT_LOG_DIR", LOG_DIR)) / LOG_NAME


class TransactionLog:
    """One run's lines in the log; every method is safe to call when the log is unusable."""

    def __init__(self, what: str, root: Path):
        self.path = log_path()
        self.error: str | None = None
        self._fd: int | None = None
        try:
            dir_fd = open_private_dir(self.path.parent, NOBODY_ELSE_WRITES)
        except OSError as e:
            self.error = _not_written(self.path.parent, e)
        else:
            try:
                self._fd = open_private_append(LOG_NAME, dir_fd, str(self.path), NOBODY_ELSE_WRITES)
            except OSError as e:
                self.error = _not_written(self.path, e)
            finally:
                os.close(dir_fd)
        self.line(f"=== {what} on {root} (pid {os.getpid()})")

    def line(self, text: str) -> None:
        if self._fd is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            os.write(self._fd, f"{stamp} {escape(text)}\n".encode())
        except OSError as e:
            self.error = f"log not complete: {escape(str(self.path))}: {e.strerror}"
            self.close()

    def step(self, index: int, total: int, name: str, event: str, note: str) -> None:
        self.line(f"[{index + 1}/{total}] {name}: {event}{f' ({note})' if note else ''}")

    def output(self, text: str) -> None:
        self.line(f"  | {text}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _not_written(path: Path, e: OSError) -> str:
    """The one line saying why the log is not written: a refusal names the path at fault
    itself; any other error is put after *path*."""
    why = e.strerror if isinstance(e, FileRefused) else f"{escape(str(path))}: {e.strerror}"
    return f"log not written: {why}"
