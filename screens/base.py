"""What every step screen shares: its title, Back / Next, problems shown beside fields,
and the engine it presents (the one thing a screen talks to)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from screens.steps import title

if TYPE_CHECKING:
    from screens.app import TmpfsRootApp
    from tui.engine import Engine, Problem


class EngineView:
    """Mixin for screens and modals: the engine behind the app, typed."""

    @property
    def tmpfs_app(self) -> TmpfsRootApp:
        return cast("TmpfsRootApp", self.app)  # type: ignore[attr-defined]

    @property
    def engine(self) -> Engine:
        return self.tmpfs_app.engine


class StepScreen(EngineView, Screen):
    """A step of the conversion. Subclasses set NAME and FIELDS and compose body()."""

    NAME = ""
    FIELDS: tuple[str, ...] = ()
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+n", "next", "Next"), Binding("f1", "help", "Help")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(title(self.NAME), classes="title")
        yield from self.body()
        with Horizontal(classes="buttons"):
            yield from self.buttons()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def buttons(self) -> ComposeResult:
        yield Button("Back", id="back")
        yield Button("Next", id="next", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.action_back()
        elif event.button.id == "next":
            self.action_next()

    def action_back(self) -> None:
        self.app.pop_screen()

    tried_next = False

    def action_help(self) -> None:
        from screens.confirm import TextModal
        from screens.help import help_text

        self.app.push_screen(TextModal("Help", help_text(self.NAME)))

    def action_next(self) -> None:
        self.tried_next = True
        self.probe_then_next()

    # Next checks everything, probes included (grub-probe, the image's decompressor): in a
    # worker, so a slow disk never freezes the screen; the engine caches what they find.
    @work(thread=True, exclusive=True, group="probes")
    def probe_then_next(self) -> None:
        problems = self.engine.problems(*self.FIELDS, probes=True)
        self.app.call_from_thread(self.after_probes, problems)

    def after_probes(self, problems: list[Problem]) -> None:
        if not self.is_current:  # left meanwhile (Escape)
            return
        errors = self.show_problems(found=problems)
        if errors:
            where = ", ".join(sorted({p.option for p in errors}))
            self.notify(f"Fix the errors shown in red first ({where}).", severity="error", markup=False)
            return
        self.tmpfs_app.next_step(self.NAME)

    def show_problems(self, found: list[Problem] | None = None) -> list[Problem]:
        """Put the engine's problems for this step's fields beside them; returns the errors.

        As the user types, only what the plan's text decides is checked (no grub-probe, no
        decompressor); Next checks everything (*found*, from the probing worker). A field
        nobody has filled in yet is not called "required" before Next is pressed."""
        if found is None:
            found = self.engine.problems(*self.FIELDS, probes=False)
        problems = [p for p in found if self.tried_next or not (p.value == "" and "is required" in p.message)]
        for f in self.FIELDS:
            for widget in self.query(f"#problem-{f}").results(Static):
                mine = [p for p in problems if p.field == f]
                widget.update("\n".join(p.line() for p in mine))
                widget.set_class(any(p.severity == "error" for p in mine), "error")
                widget.set_class(not any(p.severity == "error" for p in mine), "warning")
        return [p for p in problems if p.severity == "error"]


def problem_slot(field: str) -> Static:
    """Where the problems of *field* appear, right under it (shown literally, never as markup)."""
    return Static("", id=f"problem-{field}", classes="error", markup=False)
