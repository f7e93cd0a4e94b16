"""Step 7, Apply (or Remove): the steps with live status marks, the commands' output
streaming into a log, progress and elapsed time; on failure the step, the error and
the rollback; on success what to do next. The transaction runs in a worker that reports
through messages (a step event, an output line, the end); only their handlers touch
widgets. Escape cancels through the engine: the running command is stopped and every
step done so far is rolled back."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Footer, Header, ProgressBar, RichLog, Static

from screens.base import StepScreen
from screens.steps import title
from tui.engine import Cancelled, Event, TmpfsRootError

MARK = {
    "pending": "·",
    "start": "[cyan]▶ running[/]",
    "done": "[green]✔[/]",
    "failed": "[red]✘ failed[/]",
    "rolled back": "[yellow]↺ rolled back[/]",
}


@dataclass
class Progress(Message):
    event: Event


@dataclass
class Finished(Message):
    outcome: object | None  # the Outcome, or None when it failed
    error: TmpfsRootError | None = None


class ApplyScreen(StepScreen):
    NAME = "apply"
    BINDINGS = [Binding("escape", "back", "Back / cancel"), Binding("f1", "help", "Help")]

    def __init__(self, mode: str = "apply"):
        super().__init__()
        self.mode = mode
        self.running = False
        self.started = 0.0
        self.finished = False
        self.recorded: list = []

    def compose(self) -> ComposeResult:
        yield Header()
        heading = title("apply") if self.mode == "apply" else "Remove tmpfs-root"
        yield Static(heading + (" (dry run: nothing is written)" if self.engine.dry_run else ""), classes="title")
        # One scrolling body (PageDown reaches the end of any summary) and the Quit button in
        # the bottom bar, where it is always on screen.
        with VerticalScroll(id="body"):
            yield Static(id="steps")
            yield ProgressBar(id="progress", show_eta=False)
            yield Static(id="elapsed", classes="help")
            yield RichLog(id="log", wrap=True, markup=False, max_lines=5000)
            yield Static(id="result")
        with Horizontal(classes="buttons"):
            yield Button("Quit", id="quit", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.names = self.engine.step_names(self.mode)
        self.marks = [MARK["pending"]] * len(self.names)
        self.notes = [""] * len(self.names)
        self.show_steps()
        self.query_one("#progress", ProgressBar).update(total=len(self.names), progress=0)
        self.query_one("#quit", Button).display = False
        self.started = time.monotonic()
        self.timer = self.set_interval(0.5, self.tick)
        self.running = True
        self.run_transaction()

    def show_steps(self) -> None:
        """The steps as a table whose note column wraps (a note is never cut at 80 columns)."""
        table = Table("", "step", "note", box=None, padding=(0, 1), expand=True)
        table.columns[0].no_wrap = True
        for mark, name, note in zip(self.marks, self.names, self.notes, strict=True):
            table.add_row(Text.from_markup(mark), name, Text(note))  # notes come from commands: literal
        self.query_one("#steps", Static).update(table)

    def tick(self) -> None:
        self.query_one("#elapsed", Static).update(f"elapsed {time.monotonic() - self.started:.0f} s")

    # ------------------------------------------------------------- the work
    @work(thread=True, exclusive=True, group="transaction")
    def run_transaction(self) -> None:
        def report(event: Event) -> None:
            self.post_message(Progress(event))

        try:
            run = self.engine.apply if self.mode == "apply" else self.engine.remove
            outcome = run(report)
        except TmpfsRootError as e:  # rolled back (TransactionError, Cancelled) or refused before any step
            self.post_message(Finished(None, e))
            return
        self.post_message(Finished(outcome))

    @on(Progress)
    def show_progress(self, message: Progress) -> None:
        event = message.event
        log = self.query_one("#log", RichLog)
        if event.kind == "line":
            log.write(event.text)
            return
        i, name = event.index, event.text
        if i >= len(self.names) or self.names[i] != name:  # the real run found another list
            return
        self.marks[i] = MARK[event.state]
        if event.note and event.state != "failed":
            self.notes[i] = event.note
        self.show_steps()
        if event.state == "done":
            self.query_one("#progress", ProgressBar).advance(1)
            log.write(f"— {name}: {event.note or 'done'}")

    @on(Finished)
    def show_end(self, message: Finished) -> None:
        self.running = False
        self.finish()
        if message.error is not None:
            self.failed(message.error)
        else:
            self.succeeded(message.outcome)

    def failed(self, e: TmpfsRootError) -> None:
        restored = getattr(e, "restored", [])
        step = getattr(e, "step", "")
        for i, name in enumerate(self.names):
            if name == step:
                self.marks[i] = MARK["failed"]
        self.show_steps()
        for line in getattr(e, "tail", [])[-15:]:
            self.query_one("#log", RichLog).write(line.rstrip())
        text = Text(f"✘ {e}\n", style="red")
        if step:  # a step had begun: everything done so far was undone
            text.append(
                f"Rolled back: {len(restored)} change(s) undone; the target is as it was before.", style="yellow"
            )
            text.append(
                " Apply again when you are ready." if isinstance(e, Cancelled) else " Fix the cause and apply again."
            )
        self.query_one("#result", Static).update(self.with_log_note(text))

    def succeeded(self, outcome) -> None:
        if self.engine.dry_run:
            verb = "Apply" if self.mode == "apply" else "Remove"
            text = Text.from_markup(f"[green]✔ Dry run complete: nothing was written.[/] What {verb} would do:\n")
            text.append("\n".join("  " + a.describe() for a in self.engine.host.actions))
        elif self.mode == "remove":
            text = Text.from_markup(
                "[green]✔ tmpfs-root removed.[/] The GRUB configuration was regenerated without it."
            )
        elif not outcome.changed:
            text = Text.from_markup("[green]✔ Already applied: nothing changed.[/]")
        else:
            text = Text.from_markup("[green]✔ Applied.[/] ")
            text.append(self.engine.next_steps())
        self.query_one("#result", Static).update(self.with_log_note(text))

    def with_log_note(self, text: Text) -> Text:
        """The engine's word on its log (where a --root run's log is, or why none was
        written), below the result, as the CLI says it."""
        for prefix, said in (("warning", self.engine.log_error), ("note", self.engine.log_note)):
            if said:
                text.append(f"\n{prefix}: {said}", style="yellow" if prefix == "warning" else "")
        return text

    def finish(self) -> None:
        self.finished = True
        self.timer.stop()
        self.tick()
        self.call_after_refresh(self.query_one("#log", RichLog).scroll_end, animate=False)
        self.query_one("#quit", Button).display = True
        body = self.query_one("#body", VerticalScroll)
        body.focus()  # PageDown / arrows read the summary
        self.call_after_refresh(body.scroll_to_widget, self.query_one("#result"), top=True, animate=False)

    # ----------------------------------------------------------- keys, buttons
    def action_back(self) -> None:
        if self.running:
            self.engine.cancel()
            self.notify(
                "Cancelling: the running command is stopped and every step done so far is rolled back.",
                severity="warning",
            )
            return
        self.app.pop_screen()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "quit":
            self.app.exit()
