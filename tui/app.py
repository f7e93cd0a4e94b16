"""The Textual app: ``sudo tmpfs-root`` opens it.

A thin front over the engine: the screens (``screens/``, one per step) edit one
:class:`~tui.plan.Plan`, show the engine's own validation problems beside the
fields they name, and run long work (image inspection, image creation, apply)
in workers so the UI never blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tui.devices import BlockDevice
from tui.host import Host, make_host
from tui.images import ImageInfo
from tui.plan import Plan
from tui.validation import Context, Problem, validate


@dataclass
class Facts:
    """What the app knows about this machine. Gathered from the system; tests may pass
    fixed ones so that screenshots do not depend on the machine they run on."""

    devices: list[BlockDevice] | None
    ram: int
    euid: int
    boot_free: int | None
    watch: bool = True  # follow hotplug with a pyudev monitor
    notes: list[str] = field(default_factory=list)


def gather_facts(host: Host) -> Facts:
    from tui.devices import discover
    from tui.validation import mem_total

    notes = []
    try:
        devices = discover()
    except Exception as e:  # pyudev unusable (no /sys in a container)
        devices, _ = None, notes.append(f"cannot list block devices: {e}")
    try:
        st = os.statvfs(host.path("/boot"))
        boot_free = st.f_bavail * st.f_frsize
    except OSError:
        boot_free = None
    return Facts(devices, mem_total(), os.geteuid(), boot_free, notes=notes)


#: The steps, in order: (name, title, screen module, class name)
STEPS = [
    ("overview", "Overview", "screens.overview", "OverviewScreen"),
    ("source", "Source volume", "screens.source", "SourceScreen"),
    ("image", "Image", "screens.image", "ImageScreen"),
    ("size", "Size", "screens.size", "SizeScreen"),
    ("boot", "Boot", "screens.boot", "BootScreen"),
    ("review", "Review", "screens.review", "ReviewScreen"),
    ("apply", "Apply", "screens.apply", "ApplyScreen"),
]
STEP_NAMES = [s[0] for s in STEPS]


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
    #log { height: 1fr; min-height: 5; border: round $panel; }
    """
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, root: str = "/", dry_run: bool = False, facts: Facts | None = None,
                 plan: Plan | None = None):
        super().__init__()
        self.root = root
        self.dry_run = dry_run
        self.host = make_host(root, dry_run=dry_run)
        self.facts = facts or gather_facts(self.host)
        self.plan = plan or Plan()
        self.image_info: ImageInfo | None = None
        self.sub_title = (f"{'DRY RUN · ' if dry_run else ''}"
                          f"{'this system' if self.host.is_live else 'target ' + str(self.host.root)}")

    # ----------------------------------------------------------- navigation
    def on_mount(self) -> None:
        self.push_screen(self.make_screen("overview"))

    def make_screen(self, name: str) -> Screen:
        import importlib

        _, _, module, cls = STEPS[STEP_NAMES.index(name)]
        return getattr(importlib.import_module(module), cls)()

    def next_step(self, current: str) -> None:
        index = STEP_NAMES.index(current)
        if index + 1 < len(STEPS):
            self.push_screen(self.make_screen(STEP_NAMES[index + 1]))

    def goto(self, name: str) -> None:
        """Jump to a step (command palette): the steps before it are stacked, so Escape
        walks back through them."""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        for step in STEP_NAMES[1:STEP_NAMES.index(name) + 1]:
            self.push_screen(self.make_screen(step))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for i, (name, title, _, _) in enumerate(STEPS[:-1]):
            if name != "overview":
                yield SystemCommand(f"Step {i + 1}: {title}", f"go to the {title.lower()} step",
                                    partial(self.goto, name))
        yield SystemCommand("Review and apply", "show every file and command, then apply",
                            partial(self.goto, "review"))

    # ----------------------------------------------------------- validation
    def problems(self, *fields: str) -> list[Problem]:
        """The engine's problems with the plan, for *fields* (all when none are named)."""
        ctx = Context(host=self.host, devices=self.facts.devices, ram=self.facts.ram,
                      euid=self.facts.euid)
        found = validate(self.plan, ctx)
        return [p for p in found if not fields or p.field in fields]

    def source_device(self) -> BlockDevice | None:
        from tui.plan import source_device

        return source_device(self.plan, self.facts.devices)[1]


def run_app(root: str = "/", dry_run: bool = False) -> int:
    TmpfsRootApp(root, dry_run).run()
    return 0
