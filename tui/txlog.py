"""The log every apply and remove leaves: what was asked, each step, every line the
commands printed, and how it ended, appended to ``/var/log/tmpfs-root/tmpfs-root.log``
on this machine (``TMPFS_ROOT_LOG_DIR`` moves it). It is written on the machine running
the tool, never in a ``--root`` target, so ``remove`` still leaves the target as before.

The directory is root's alone (0700) and the file is opened without following a link,
appended to, never truncated. A log that cannot be written is not a reason to fail:
the work goes on and the CLI says where it would have gone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tui.errors import escape

LOG_DIR = "/var/log/tmpfs-root"
LOG_NAME = "tmpfs-root.log"


def log_path() -> Path:
    return Path(os.environ.get("TMPFS_ROOT_LOG_DIR", LOG_DIR)) / LOG_NAME


class TransactionLog:
    """One run's lines in the log; every method is safe to call when the log is unusable."""

    def __init__(self, what: str, root: Path):
        self.path = log_path()
        self.error: str | None = None
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            self.error = f"{self.path}: {e.strerror}"
        self.line(f"=== {what} on {root} (pid {os.getpid()})")

    def line(self, text: str) -> None:
        if self._fd is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            os.write(self._fd, f"{stamp} {escape(text)}\n".encode())
        except OSError as e:
            self.error = f"{self.path}: {e.strerror}"
            self.close()

    def step(self, index: int, total: int, name: str, event: str, note: str) -> None:
        self.line(f"[{index + 1}/{total}] {name}: {event}{f' ({note})' if note else ''}")

    def output(self, text: str) -> None:
        self.line(f"  | {text}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
