"""Step 1, Overview: preflight checks with a pass/warn/fail mark each; an existing
tmpfs-root setup is shown with Modify / Remove / Status."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from screens.base import StepScreen

MARKS = {"pass": "[green]✔ pass[/]", "warn": "[yellow]! warn[/]", "fail": "[red]✘ fail[/]"}


@dataclass
class Check:
    name: str
    result: str  # pass, warn, fail
    detail: str


def preflight(host, facts) -> list[Check]:
    """The checks the overview shows, from engine calls."""
    from tui import bootloader
    from tui.devices import human_size
    from tui.plan import default_kernels, target_kernels

    checks = []
    if host.is_live:
        checks.append(Check("root", "pass" if facts.euid == 0 else "fail",
                            "running as root" if facts.euid == 0 else "not root: run it with sudo"))
    else:
        checks.append(Check("root", "pass", f"preparing the system in {host.root}"))
    dracut = host.which("dracut")
    checks.append(Check("dracut", "pass" if dracut else "fail",
                        f"{dracut} in the target" if dracut else "not installed in the target: install "
                                                               "the dracut package there"))
    bl = bootloader.detect(host)
    checks.append(Check("bootloader", "pass" if bl.style else "fail", bl.describe()))
    kernels = target_kernels(host)
    checks.append(Check("kernels", "pass" if kernels else "fail",
                        f"{', '.join(kernels)} (default {default_kernels(host)[0]})" if kernels
                        else "no kernel in the target's /lib/modules"))
    checks.append(Check("RAM", "pass" if facts.ram >= 1 << 30 else "warn",
                        f"{human_size(facts.ram)}: the tmpfs root lives in it"))
    if facts.boot_free is None:
        checks.append(Check("free space in /boot", "warn", "cannot tell"))
    else:
        checks.append(Check("free space in /boot", "pass" if facts.boot_free >= 200 << 20 else "warn",
                            f"{human_size(facts.boot_free)} free; each initramfs takes 20-60 MB"))
    if facts.devices is None:
        checks.append(Check("block devices", "warn", "; ".join(facts.notes) or "not listed"))
    return checks


class OverviewScreen(StepScreen):
    NAME = "overview"
    BINDINGS = [Binding("escape", "app.quit", "Quit"), Binding("ctrl+n", "next", "Start")]

    def compose(self) -> ComposeResult:
        from textual.widgets import Footer, Header

        from tui.transaction import is_installed

        self.installed = is_installed(self.app.host)
        yield Header()
        yield Static("Step 1 of 7: Overview: boot this system with its root filesystem in RAM",
                     classes="title")
        with VerticalScroll():
            yield DataTable(id="checks", cursor_type="row", zebra_stripes=True)
            yield Static(id="verdict")
            yield Static(id="setup")
        with Horizontal(classes="buttons"):
            if self.installed:
                yield Button("Modify", id="modify", variant="primary")
                yield Button("Status", id="status")
                yield Button("Remove", id="remove", variant="error")
            else:
                yield Button("Start", id="next", variant="primary")
            yield Button("Quit", id="quit")
        yield Footer()

    def on_mount(self) -> None:
        self.checks = preflight(self.app.host, self.app.facts)
        table = self.query_one("#checks", DataTable)
        table.add_columns("check", "result", "detail")
        for check in self.checks:
            table.add_row(check.name, MARKS[check.result], Text(check.detail))  # literally, not markup
        failed = [c.name for c in self.checks if c.result == "fail"]
        verdict = self.query_one("#verdict", Static)
        if failed:
            verdict.update(f"[red]Cannot convert: fix {', '.join(failed)} first.[/]")
        else:
            verdict.update("[green]Ready.[/] Next: pick the volume that holds the root image.")
        if self.installed:
            self._show_setup()

    def _show_setup(self) -> None:
        from tui.transaction import status

        from rich.text import Text

        report = status(self.app.host)
        text = Text()
        if report["damaged"]:
            text.append("tmpfs-root's records in this target are damaged", "bold red")
            text.append(f": {', '.join(report['damaged'])}\n")
        else:
            text.append("tmpfs-root is installed", "bold")
            text.append(f": boot mode {report.get('boot')}, entry {report.get('entry')}\n")
            text.append(f"command line: {report.get('cmdline', '')}\n")
        for p in report["problems"]:  # the target's contents, shown as they are, never as markup
            text.append(f"! {p}\n", "yellow")
        if not report["problems"]:
            text.append("intact", "green")
        self.query_one("#setup", Static).update(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id
        if button == "quit":
            self.app.exit()
        elif button == "next":
            self.action_next()
        elif button == "modify":
            self._load_installed_plan()
            self.app.next_step(self.NAME)
        elif button == "status":
            from tui.transaction import status
            self.app.push_screen(TextModal("Status", _status_text(status(self.app.host))))
        elif button == "remove":
            from screens.apply import ApplyScreen
            from screens.confirm import ConfirmModal

            def confirmed(ok: bool | None) -> None:
                if ok:
                    self.app.push_screen(ApplyScreen(mode="remove"))
            self.app.push_screen(ConfirmModal(
                "Remove tmpfs-root?", f"Removes the boot entry, hooks, module, initramfs images and "
                f"state from {self.app.host.root}, and regenerates the GRUB configuration.",
                "Remove"), confirmed)

    def action_next(self) -> None:
        if any(c.result == "fail" for c in self.checks):
            self.notify("A preflight check failed; fix it first.", severity="error")
            return
        self.app.next_step(self.NAME)

    def _load_installed_plan(self) -> None:
        from tui.errors import TmpfsRootError, escape
        from tui.plan import Plan
        from tui.safefile import SMALL_LIMIT
        from tui.transaction import PLAN_FILE

        try:
            self.app.plan = Plan.from_toml(self.app.host.read_utf8(PLAN_FILE, SMALL_LIMIT), origin=PLAN_FILE)
        except OSError as e:
            self.notify(escape(f"{PLAN_FILE}: {e.strerror}"), severity="warning", markup=False)
        except TmpfsRootError as e:
            self.notify(escape(str(e)), severity="warning", markup=False)


def _status_text(report: dict) -> str:
    import json
    return json.dumps(report, indent=2)


class TextModal(ModalScreen):
    """A text to read (status, a file's content), closed with Escape."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]
    DEFAULT_CSS = """
    TextModal { align: center middle; }
    TextModal > VerticalScroll { width: 90%; height: 80%; border: thick $primary; background: $surface; }
    """

    def __init__(self, title: str, text: str):
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.title_text, classes="title")
            yield Static(self.text, markup=False)
            yield Button("Close", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()
