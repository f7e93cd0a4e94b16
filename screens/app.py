"""The Textual app: ``sudo tmpfs-root`` opens it.

A thin front over the engine (:class:`tui.engine.Engine`): the screens (one per
step, in ``screens/``) edit the engine's plan, show its problems beside the fields
they name, and run long work (image inspection, image creation, apply) in workers so
the UI never blocks. Nothing here decides anything the command line would not.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from screens.steps import STEP_NAMES, STEPS

if TYPE_CHECKING:
    from tui.engine import Engine, Facts, ImageInfo, Plan


#: Where each step's screen lives; only the module of the screen shown is imported (start-up).
SCREEN_MODULES = {
    "overview": ("screens.overview", "OverviewScreen"),
    "source": ("screens.source", "SourceScreen"),
    "image": ("screens.image", "ImageScreen"),
    "size": ("screens.size", "SizeScreen"),
    "boot": ("screens.boot", "BootScreen"),
    "review": ("screens.review", "ReviewScreen"),
    "apply": ("screens.apply", "ApplyScreen"),
}


def step_screen(name: str) -> Screen:
    """A new screen for the step *name*."""
    module, cls = SCREEN_MODULES[name]
    return getattr(importlib.import_module(module), cls)()


class TmpfsRootApp(App):
    TITLE = "tmpfs-root"
    CSS = """
    Screen { layout: vertical; }
    .title { text-style: bold; padding: 0 1; }
    .help { color: $text-muted; padding: 0 1; }
    .error { color: $error; padding: 0 1; }
    .warning { color: $warning; padding: 0 1; }
    .ok { color: $success; padding: 0 1; }
    .cmdline { background: $boost; padding: 0 1; }
    .buttons { height: auto; dock: bottom; padding: 0 1; }
    .buttons Button { margin-right: 1; }
    .field { height: auto; padding: 0 1; margin-bottom: 1; }
    .field Label { padding: 0 1 0 0; width: 16; }
    TabbedContent, TabPane, TabPane > Vertical { height: auto; }
    .row { height: auto; }
    Input { width: 1fr; }
    DataTable { height: auto; max-height: 12; }
    #log { height: 8; border: round $panel; }
    #body { height: 1fr; }
    /* lists without a frame: at 80×24 every line counts; focus shows as a background */
    SelectionList, RadioSet, #files { border: none; padding: 0 1; }
    SelectionList:focus, RadioSet:focus, #files:focus { background: $boost; }
    Input > .input--placeholder { color: $text-disabled; text-style: italic; }
    """
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, root: str = "/", dry_run: bool = False, facts: Facts | None = None, plan: Plan | None = None):
        super().__init__()
        self._engine_args = (root, dry_run, facts, plan)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self.dry_run = dry_run
        where = os.path.realpath(root)
        self.sub_title = f"{'DRY RUN · ' if dry_run else ''}{'this system' if where == '/' else 'target ' + where}"

    @property
    def engine(self) -> Engine:
        """The engine, made on first use: the first screen is drawn while the Overview's
        worker imports and builds it (bench/startup.py)."""
        with self._engine_lock:
            if self._engine is None:
                from tui.engine import Engine

                root, dry_run, facts, plan = self._engine_args
                self._engine = Engine(root, dry_run=dry_run, facts=facts, plan=plan)
            return self._engine

    # shortcuts for tests and screens: everything lives in the engine
    @property
    def plan(self) -> Plan:
        return self.engine.plan

    @property
    def facts(self) -> Facts:
        return self.engine.facts

    @property
    def image_info(self) -> ImageInfo | None:
        return self.engine.image_info

    # ----------------------------------------------------------- navigation
    def get_default_screen(self) -> Screen:
        """The Overview is the app's first screen (not pushed over an empty one: one screen
        fewer to build before anything shows)."""
        return step_screen("overview")

    def next_step(self, current: str) -> None:
        index = STEP_NAMES.index(current)
        if index + 1 < len(STEPS):
            self.push_screen(step_screen(STEP_NAMES[index + 1]))

    def blocked_by_preflight(self) -> bool:
        """Whether a failed preflight check stops the walk: it does for a real conversion; a
        dry run walks on with the problem shown, so the flow can be seen before fixing it
        (its Apply only records)."""
        failed = [c.name for c in self.engine.preflight() if c.result == "fail"]
        if not failed:
            return False
        if self.dry_run:
            self.notify(
                f"Dry run: walking on although {', '.join(failed)} failed; a real Apply would refuse.",
                severity="warning",
            )
            return False
        self.notify(f"A preflight check failed ({', '.join(failed)}); fix it first.", severity="error")
        return True

    def goto(self, name: str) -> None:
        """Jump to a step (command palette): the steps before it are stacked, so Escape
        walks back through them. A failed preflight stops it as it stops Next."""
        if self.blocked_by_preflight():
            return
        while len(self.screen_stack) > 1:
            self.pop_screen()
        for step in STEP_NAMES[1 : STEP_NAMES.index(name) + 1]:
            self.push_screen(step_screen(step))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for i, (name, title) in enumerate(STEPS[:-1]):
            if name != "overview":
                yield SystemCommand(
                    f"Step {i + 1}: {title}", f"go to the {title.lower()} step", partial(self.goto, name)
                )
        yield SystemCommand("Review and apply", "show every file and command, then apply", partial(self.goto, "review"))


def run_app(root: str = "/", dry_run: bool = False) -> int:
    TmpfsRootApp(root, dry_run).run()
    return 0
