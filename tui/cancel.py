"""The one way to stop long work: a cancel token.

Whoever started the work (the CLI on Ctrl-C or SIGTERM, the TUI on Escape) calls
:meth:`CancelToken.cancel`; the work checks :meth:`CancelToken.check` between its
steps, and whatever registered with :meth:`CancelToken.on_cancel` (the command
running now, tar and its compressor) is stopped at once. The work then raises
:class:`~tui.errors.Cancelled` after rolling back what it had done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tui.errors import Cancelled


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Ask the work to stop; what is running now is stopped at once."""
        self._event.set()
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call *hook* on cancel (at once, if cancelled already)."""
        with self._lock:
            self._hooks.append(hook)
        if self.cancelled:
            hook()

    def check(self, what: str = "the work") -> None:
        """Raise Cancelled if cancel was asked."""
        if self.cancelled:
            raise Cancelled(f"{what} was cancelled")
