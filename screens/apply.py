"""Step 7, Apply (or Remove): the steps with live status marks, the commands' output
streaming into a log, progress and elapsed time; on failure the step, the error and
the rollback; on success what to do next. The transaction runs in a worker."""

from __future__ import annotations

import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Button, DataTable, Footer, Header, ProgressBar, RichLog, Static

from screens.base import StepScreen

MARK = {"pending": "·", "start": "[cyan]▶ running[/]", "done": "[green]✔[/]", "failed": "[red]✘ failed[/]",
        "rolled back": "[yellow]↺ rolled back[/]"}


class Cancelled(Exception):
    def __str__(self) -> str:
        return "cancelled by the user"


class ApplyScreen(StepScreen):
    NAME = "apply"
    BINDINGS = [Binding("escape", "back", "Back / cancel")]

    def __init__(self, mode: str = "apply"):
        super().__init__()
        self.mode = mode
        self.running = False
        self.cancel_requested = False
        self.started = 0.0
        self.finished = False

    def compose(self) -> ComposeResult:
        yield Header()
        title = "Step 7 of 7: Apply" if self.mode == "apply" else "Remove tmpfs-root"
        yield Static(title + (" (dry run: nothing is written)" if self.app.dry_run else ""), classes="title")
        yield DataTable(id="steps", cursor_type="none")
        yield ProgressBar(id="progress", show_eta=False)
        yield Static(id="elapsed", classes="help")
        yield RichLog(id="log", wrap=True, markup=False, max_lines=5000)
        yield Static(id="result")
        yield Button("Quit", id="quit", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        from tui.host import make_host
        from tui.transaction import apply_steps, remove_steps

        preview = make_host(self.app.host.root, dry_run=True)
        if self.mode == "apply":
            _, steps = apply_steps(self.app.plan, preview, self.app.facts.devices)
        else:
            steps = remove_steps(preview)
        self.names = [s.name for s in steps]
        table = self.query_one("#steps", DataTable)
        table.add_columns("", "step", "note")
        for i, name in enumerate(self.names):
            table.add_row(MARK["pending"], name, "", key=str(i))
        self.query_one("#progress", ProgressBar).update(total=len(self.names), progress=0)
        self.query_one("#quit", Button).display = False
        self.started = time.monotonic()
        self.timer = self.set_interval(0.5, self.tick)
        self.run_transaction()

    def tick(self) -> None:
        self.query_one("#elapsed", Static).update(f"elapsed {time.monotonic() - self.started:.0f} s")

    # ------------------------------------------------------------- the work
    @work(thread=True, exclusive=True, group="transaction")
    def run_transaction(self) -> None:
        from tui.host import HostError, make_host
        from tui.transaction import apply, remove

        self.host = make_host(self.app.host.root, dry_run=self.app.dry_run)
        self.running = True
        log = self.query_one("#log", RichLog)

        def on_line(line: str) -> None:
            self.app.call_from_thread(log.write, line)

        def on_step(i: int, total: int, name: str, event: str, note: str) -> None:
            if event == "start" and self.cancel_requested:
                raise Cancelled()
            self.app.call_from_thread(self.mark, i, name, event, note)

        try:
            if self.mode == "apply":
                outcome = apply(self.app.plan, self.host, self.app.facts.devices, on_line=on_line,
                                on_step=on_step)
            else:
                outcome = remove(self.host, on_line=on_line, on_step=on_step)
        except HostError as e:  # a TransactionError (rolled back) or an error before any step
            self.app.call_from_thread(self.failed, e)
            return
        finally:
            self.running = False
        self.app.call_from_thread(self.succeeded, outcome)

    def mark(self, i: int, name: str, event: str, note: str) -> None:
        table = self.query_one("#steps", DataTable)
        if i >= len(self.names) or self.names[i] != name:  # the real run found another list
            return
        table.update_cell(str(i), table.ordered_columns[0].key, MARK[event])
        if note and event != "failed":
            table.update_cell(str(i), table.ordered_columns[2].key, note)
        if event == "done":
            self.query_one("#progress", ProgressBar).advance(1)
            self.query_one("#log", RichLog).write(f"— {name}: {note or 'done'}")

    def failed(self, e) -> None:
        self.finish()
        restored = getattr(e, "restored", [])
        step = getattr(e, "step", "")
        table = self.query_one("#steps", DataTable)
        for i, name in enumerate(self.names):
            if name == step:
                table.update_cell(str(i), table.ordered_columns[0].key, MARK["failed"])
        for line in getattr(e, "tail", [])[-15:]:
            self.query_one("#log", RichLog).write(line.rstrip())
        self.query_one("#result", Static).update(
            f"[red]✘ {e}[/]\n[yellow]Rolled back: {len(restored)} change(s) undone; the target is as it "
            "was before.[/] Fix the cause and apply again.")

    def succeeded(self, outcome) -> None:
        self.finish()
        if self.mode == "remove":
            text = "[green]✔ tmpfs-root removed.[/] The GRUB configuration was regenerated without it."
        elif self.app.dry_run:
            text = ("[green]✔ Dry run complete: nothing was written.[/] What Apply would do:\n"
                    + "\n".join("  " + a.describe() for a in self.host.actions))
        elif not outcome.changed:
            text = "[green]✔ Already applied: nothing changed.[/]"
        else:
            nxt = {"once": "Reboot (systemctl reboot) to boot it once; if it fails, the machine "
                           "reboots into its normal entry.",
                   "menu": "Reboot and choose the tmpfs-root entry in the GRUB menu.",
                   "default": "Reboot (systemctl reboot): it boots from RAM until you remove it."}
            text = (f"[green]✔ Applied.[/] {nxt[self.app.plan.boot]}\nAfter the boot, `findmnt /` shows "
                    "tmpfs. `tmpfs-root status` checks the setup; `tmpfs-root remove` undoes it.")
        self.query_one("#result", Static).update(text)

    def finish(self) -> None:
        self.finished = True
        self.timer.stop()
        self.tick()
        self.call_after_refresh(self.query_one("#log", RichLog).scroll_end, animate=False)
        self.query_one("#quit", Button).display = True

    # ----------------------------------------------------------- keys, buttons
    def action_back(self) -> None:
        if self.running:
            self.cancel_requested = True
            self.host.terminate()
            self.notify("Cancelling: the running command is stopped and every step done so far is "
                        "rolled back.", severity="warning")
            return
        self.app.pop_screen()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "quit":
            self.app.exit()
