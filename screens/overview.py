"""Step 1, Overview: preflight checks with a pass/warn/fail mark each; an existing
tmpfs-root setup is shown with Modify / Remove / Status."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Static

from screens.base import StepScreen
from screens.confirm import TextModal

MARKS = {"pass": "[green]✔ pass[/]", "warn": "[yellow]! warn[/]", "fail": "[red]✘ fail[/]"}


class OverviewScreen(StepScreen):
    NAME = "overview"
    BINDINGS = [Binding("escape", "quit", "Quit"), Binding("ctrl+n", "next", "Start"), Binding("f1", "help", "Help")]

    installed = False

    def compose(self) -> ComposeResult:
        from textual.widgets import Footer, Header

        yield Header()
        yield Static("Step 1 of 7: Overview: boot this system with its root filesystem in RAM", classes="title")
        with VerticalScroll():
            yield Static("Checking the target…", id="checks", classes="help")
            yield Static(id="verdict")
            yield Static(id="setup")
        with Horizontal(classes="buttons", id="overview-buttons"):
            yield Button("Start", id="next", variant="primary")
            yield Button("Quit", id="quit")
        yield Footer()

    def on_mount(self) -> None:
        self.call_after_refresh(self.check_target)  # drawn first, then checked

    # The checks run in a worker: the screen is up at once, and fills in when they are done
    # (device discovery, the bootloader and the state of an installed setup take a moment).
    @work(thread=True, exclusive=True, group="preflight")
    def check_target(self) -> None:
        installed = self.engine.is_installed()
        checks = self.engine.preflight()
        report = self.engine.status() if installed else None
        self.app.call_from_thread(self.show_checks, installed, checks, report)

    def show_checks(self, installed: bool, checks: list, report: dict | None) -> None:
        if not self.is_mounted:
            return
        self.installed, self.checks = installed, checks
        if installed:  # an existing setup: Modify / Status / Remove instead of Start
            bar = self.query_one("#overview-buttons", Horizontal)
            self.query_one("#next", Button).remove()
            bar.mount_all(
                [
                    Button("Modify", id="modify", variant="primary"),
                    Button("Status", id="status"),
                    Button("Remove", id="remove", variant="error"),
                ],
                before=self.query_one("#quit", Button),
            )
        from rich.table import Table

        # A Rich table in a Static, not a DataTable: its detail column wraps at 80 columns
        # instead of being cut, and there is nothing to select in it.
        table = Table("check", "result", "detail", box=None, padding=(0, 1), expand=True)
        table.columns[0].no_wrap = table.columns[1].no_wrap = True
        for check in self.checks:
            table.add_row(check.name, Text.from_markup(MARKS[check.result]), Text(check.detail))  # literally
        checks_widget = self.query_one("#checks", Static)
        checks_widget.update(table)
        checks_widget.remove_class("help")
        failed = [c.name for c in self.checks if c.result == "fail"]
        verdict = self.query_one("#verdict", Static)
        if failed:
            verdict.update(f"[red]Cannot convert: fix {', '.join(failed)} first.[/]")
        else:
            verdict.update("[green]Ready.[/] Next: pick the volume that holds the root image.")
        if report is not None:
            self._show_setup(report)

    def _show_setup(self, report: dict) -> None:
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
            self.tmpfs_app.next_step(self.NAME)
        elif button == "status":
            report = self.engine.status()
            lines = self.engine.status_lines(report) + [f"! {p}" for p in report["problems"]]
            self.app.push_screen(TextModal("Status", "\n".join(lines)))
        elif button == "remove":
            from screens.apply import ApplyScreen
            from screens.confirm import ConfirmModal

            def confirmed(ok: bool | None) -> None:
                if ok:
                    self.app.push_screen(ApplyScreen(mode="remove"))

            self.app.push_screen(
                ConfirmModal(
                    "Remove tmpfs-root?",
                    f"Removes the boot entry, hooks, module, initramfs images and "
                    f"state from {self.engine.root}, and regenerates the GRUB configuration.",
                    "Remove",
                ),
                confirmed,
            )

    def action_next(self) -> None:
        if self.tmpfs_app.blocked_by_preflight():
            return
        self.tmpfs_app.next_step(self.NAME)

    def action_quit(self) -> None:
        """Escape on the first step asks before leaving, saying what this session changed
        (an apply, a remove, an image written), or that it changed nothing."""
        from screens.confirm import ConfirmModal

        def answered(ok: bool | None) -> None:
            if ok:
                self.app.exit()

        engine = self.tmpfs_app._engine  # not made here just to be asked: unmade, it changed nothing
        changes = engine.changes if engine is not None else []
        detail = "Nothing has been changed." if not changes else "In this session:\n" + "\n".join(changes)
        self.app.push_screen(ConfirmModal("Quit tmpfs-root?", detail, "Quit"), answered)

    def _load_installed_plan(self) -> None:
        from tui.engine import TmpfsRootError, escape  # not at the top: the first screen does not wait for it

        try:
            self.engine.load_installed_plan()
        except TmpfsRootError as e:
            self.notify(escape(str(e)), severity="warning", markup=False)
