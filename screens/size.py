"""Step 4, Size: the tmpfs size, validated as typed, with the RAM and the image's
unpacked size beside it and a bar showing how the image fits."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Static

from screens.base import StepScreen, problem_slot
from tui.engine import human_size, plan_field

BAR = 40


def fit_bar(image: int | None, size: int | None, ram: int) -> str:
    """[████░░░░] image of tmpfs, with the tmpfs's share of RAM."""
    if not size:
        return "Decided at boot: the image plus half again (at least 256 MiB more), at most 90% of RAM."
    if image:
        used = min(BAR, round(BAR * image / size))
        colour = "red" if image > size else ("yellow" if image > size * 0.85 else "green")
        bar = f"[{colour}]{'█' * used}[/]{'░' * (BAR - used)}"
        fit = (
            f"image {human_size(image)} of a {human_size(size)} tmpfs "
            f"({'does NOT fit' if image > size else f'{human_size(size - image)} free after unpacking'})"
        )
    else:
        bar, fit = "░" * BAR, f"{human_size(size)} tmpfs (image size not known yet: pick it on the Image step)"
    return f"{bar}  {fit}\nRAM {human_size(ram)}: the tmpfs may use {size / ram:.0%} of it" if ram else bar


class SizeScreen(StepScreen):
    NAME = "size"
    FIELDS = ("size",)

    def body(self) -> ComposeResult:
        info = self.engine.image_info
        if self.engine.plan.size is None and info is not None:
            self.engine.edit(size=info.recommended_size)
        facts = [f"RAM {human_size(self.engine.facts.ram)}"]
        if info is not None:
            facts.append(f"image {human_size(info.uncompressed)} unpacked ({info.files} files)")
            facts.append(f"recommended {info.recommended_size}")
        yield Static(" · ".join(facts), id="facts", classes="help")
        with Horizontal(classes="field"):
            yield Label(plan_field("size").label)
            yield Input(
                compact=True,
                value=self.engine.plan.size or "",
                placeholder=plan_field("size").placeholder,
                id="size",
            )
        yield problem_slot("size")
        yield Static(id="bar")
        yield Static(
            "Accepted: N, N followed by k, m, g, t, p or e, or N% of RAM. The tmpfs only takes "
            "RAM as files fill it; the size is a ceiling.",
            classes="help",
        )

    def on_mount(self) -> None:
        self.refresh_fit()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.engine.edit(size=event.value.strip() or None)
        self.refresh_fit()

    def refresh_fit(self) -> None:
        errors = self.show_problems()
        size = None if errors else self.engine.size_bytes(self.engine.plan.size)
        info = self.engine.image_info
        self.query_one("#bar", Static).update(fit_bar(info.uncompressed if info else None, size, self.engine.facts.ram))
