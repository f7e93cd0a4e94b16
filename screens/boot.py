"""Step 5, Boot: the kernels to build for, the entry title, the boot mode (once
recommended, and why), extra kernel arguments."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, RadioButton, RadioSet, SelectionList, Static

from screens.base import StepScreen, problem_slot
from tui.engine import plan_field

#: The boot modes: a short label for the choice, and what it does, shown whole below it.
MODES = {
    "once": (
        "once (recommended)",
        "once: boots the entry on the next reboot only; if that boot fails it reboots into your "
        "normal entry (rd.shell=0 rd.emergency=reboot panic=10).",
    ),
    "menu": ("menu", "menu: only adds the entry; choose it in the GRUB menu."),
    "default": (
        "default",
        "default: every boot uses it until you change it or remove tmpfs-root (asks to confirm).",
    ),
}


class BootScreen(StepScreen):
    NAME = "boot"
    FIELDS = ("kernels", "title", "boot", "append", "bootloader")

    def body(self) -> ComposeResult:
        engine = self.engine
        chosen = engine.plan.kernels or engine.default_kernels()
        yield Static(plan_field("kernels").label + ":", classes="help")
        yield SelectionList[str](*[(k, k, k in chosen) for k in reversed(engine.target_kernels())], id="kernels")
        yield problem_slot("kernels")
        with Horizontal(classes="field"):
            yield Label(plan_field("title").label)
            yield Input(
                compact=True,
                value=engine.plan.title or "",
                placeholder=plan_field("title").placeholder.format(default=engine.default_title()),
                id="title",
            )
        yield problem_slot("title")
        with RadioSet(id="boot"):
            for mode, (label, _) in MODES.items():
                yield RadioButton(label, value=engine.plan.boot == mode, id=f"mode-{mode}")
        yield Static(MODES[engine.plan.boot][1], id="mode-help", classes="help")
        yield problem_slot("boot")
        yield problem_slot("bootloader")
        with Horizontal(classes="field"):
            yield Label(plan_field("append").label)
            yield Input(
                compact=True, value=engine.plan.append, placeholder=plan_field("append").placeholder, id="append"
            )
        yield problem_slot("append")

    def on_mount(self) -> None:
        self.sync_kernels()
        self.show_problems()

    def sync_kernels(self) -> None:
        selected = list(self.query_one("#kernels", SelectionList).selected)
        self.engine.edit(kernels=[] if selected == self.engine.default_kernels() else selected)

    def on_selection_list_selected_changed(self, event) -> None:
        self.sync_kernels()
        self.show_problems()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "title":
            self.engine.edit(title=event.value or None)
        elif event.input.id == "append":
            self.engine.edit(append=event.value)
        self.show_problems()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        mode = (event.pressed.id or "mode-once").removeprefix("mode-")
        self.engine.edit(boot=mode)
        self.query_one("#mode-help", Static).update(MODES[mode][1])
        self.show_problems()

    def action_next(self) -> None:
        if not self.query_one("#kernels", SelectionList).selected:
            self.notify("Pick at least one kernel.", severity="error")
            return
        super().action_next()
