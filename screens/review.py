"""Step 6, Review: the exact kernel command line, every file that would be written
(content viewable), every command; Save plan (TOML); Apply after an explicit
confirmation. What is shown comes from running apply's own steps on a recording
(dry-run) host."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static

from screens.base import EngineView, StepScreen
from screens.confirm import TextModal
from tui.engine import TmpfsRootError, escape


class ReviewScreen(StepScreen):
    NAME = "review"
    BINDINGS = [*StepScreen.BINDINGS, Binding("ctrl+s", "save", "Save plan")]

    def body(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="problems", classes="error", markup=False)
            yield Static("Kernel command line:", classes="title")
            yield Static(id="cmdline", classes="cmdline", markup=False)
            yield Static(id="summary", classes="help", markup=False)
            yield Static("Files (Enter shows the content):", classes="title")
            # An option list, not a table: a long path wraps onto the next line instead of
            # being cut at 80 columns, and Enter still opens the file.
            yield OptionList(id="files")
            yield Static("Commands:", classes="title")
            yield Static(id="commands", markup=False)

    def buttons(self) -> ComposeResult:
        yield Button("Back", id="back")
        yield Button("Save plan", id="save")
        yield Button("Apply…", id="next", variant="error")

    def on_mount(self) -> None:
        problems = self.engine.problems()
        errors = [p for p in problems if p.severity == "error"]
        warnings = [p for p in problems if p.severity == "warning"]
        self.query_one("#problems", Static).update("\n".join(p.line() for p in errors + warnings))
        self.query_one("#next", Button).disabled = bool(errors)
        self.actions = []
        if errors:
            return
        preview = self.engine.preview()
        resolved = preview.resolved
        assert resolved is not None
        self.actions = preview.files
        self.query_one("#cmdline", Static).update(" ".join(resolved.entry_cmdline))
        self.query_one("#summary", Static).update(
            f"Entry “{resolved.title}” for {', '.join(resolved.kernels)}, boot mode {self.engine.plan.boot}; "
            f"target {preview.root}" + (" (dry run: Apply only shows what it would do)" if self.engine.dry_run else "")
        )
        self.query_one("#files", OptionList).add_options(
            Text(f"{a.kind} {a.path} · {f'{len(a.content)} B' if a.content is not None else 'built'}")
            for a in self.actions  # literally: a path is never markup
        )
        chroot = "" if preview.is_live else f"run in {preview.root} (chroot):\n"
        self.query_one("#commands", Static).update(
            chroot + "\n".join("  " + c.describe() for c in preview.commands) if preview.commands else "none"
        )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        action = self.actions[event.option_index]
        text = (
            action.content.decode("utf-8", "replace")
            if action.content is not None
            else "(built by dracut when applied)"
        )
        self.app.push_screen(TextModal(action.path, text))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            super().on_button_pressed(event)

    def action_save(self) -> None:
        self.app.push_screen(SavePlanModal())

    def action_next(self) -> None:
        from screens.apply import ApplyScreen
        from screens.confirm import ConfirmModal

        if self.query_one("#next", Button).disabled:
            self.notify("The plan has errors; go back and fix them.", severity="error")
            return
        where = "this system" if self.engine.is_live else str(self.engine.root)
        detail = (
            f"Writes {len(self.actions)} file(s) in {where}, builds the initramfs and changes the "
            f"GRUB configuration. Any failure rolls every step back."
        )
        if self.engine.plan.boot == "default":
            detail += "\nBoot mode default: every reboot boots from RAM until you remove it."
        if self.engine.dry_run:
            detail = "Dry run: shows each step and writes nothing."

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.app.push_screen(ApplyScreen(mode="apply"))

        self.app.push_screen(ConfirmModal(f"Apply to {where}?", detail, "Apply"), confirmed)


class SavePlanModal(EngineView, ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "Cancel")]
    DEFAULT_CSS = """
    SavePlanModal { align: center middle; }
    SavePlanModal > Vertical { width: 80%; height: auto; border: thick $primary; background: $surface;
                               padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            load = self.engine.command("apply", "--plan", "FILE")
            yield Static(Text.assemble(("Save the plan", "bold"), f" (load it with `{load}`)"))
            yield Input(compact=True, value="/root/tmpfs-root.toml", id="path")
            yield Static(id="message", classes="error", markup=False)
            with Horizontal(classes="row"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss()
            return
        path = self.query_one("#path", Input).value.strip()
        try:
            if not path.startswith("/"):
                raise TmpfsRootError(f"--save {path!r}: accepted: an absolute path, e.g. /root/tmpfs-root.toml")
            self.engine.save_plan(path)
        except TmpfsRootError as e:
            self.query_one("#message", Static).update(f"error: {e}")
            return
        self.app.notify(f"Plan saved to {escape(path)}", markup=False)
        self.dismiss()
