"""Step 1, Overview: preflight checks with a pass/warn/fail mark each; an existing
tmpfs-root setup is shown with Modify / Remove / Status."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from screens.base import StepScreen
from tui.engine import TmpfsRootError, escape

MARKS = {"pass": "[green]✔ pass[/]", "warn": "[yellow]! warn[/]", "fail": "[red]✘ fail[/]"}


class OverviewScreen(StepScreen):
    NAME = "overview"
    BINDINGS = [Binding("escape", "quit", "Quit"), Binding("ctrl+n", "next", "Start"), Binding("f1", "help", "Help")]

    def compose(self) -> ComposeResult:
        from textual.widgets import Footer, Header

        self.installed = self.engine.is_installed()
        yield Header()
        yield Static("Step 1 of 7: Overview: boot this system with its root filesystem in RAM", classes="title")
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
        self.checks = self.engine.preflight()
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
        report = self.engine.status()
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
        """Escape on the first step asks before leaving (nothing has been changed)."""
        from screens.confirm import ConfirmModal

        def answered(ok: bool | None) -> None:
            if ok:
                self.app.exit()

        self.app.push_screen(ConfirmModal("Quit tmpfs-root?", "Nothing has been changed.", "Quit"), answered)

    def _load_installed_plan(self) -> None:
        try:
            self.engine.load_installed_plan()
        except TmpfsRootError as e:
            self.notify(escape(str(e)), severity="warning", markup=False)


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
