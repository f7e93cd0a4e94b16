"""Step 3, Image: the archives on the chosen volume (its mountpoint, or a private
read-only mount made and removed around each look), recognised by their first
bytes; format, sizes and file count read in a worker with a progress bar; an
optional sha256 pin; and "Create an image from this host"."""

from __future__ import annotations

import os

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Label, ProgressBar, Static

from screens.base import StepScreen, problem_slot
from tui.devices import human_size


class ImageScreen(StepScreen):
    NAME = "image"
    FIELDS = ("image", "sha256")

    def body(self) -> ComposeResult:
        yield Static(id="where", classes="help")
        yield DataTable(id="archives", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="field"):
            yield Label("Image path")
            yield Input(compact=True, value=self.app.plan.image, placeholder="images/rootfs.tar.zst (on the source volume)",
                        id="image-path")
        yield problem_slot("image")
        yield ProgressBar(id="progress", show_eta=True)
        yield Static(id="info")
        yield Checkbox("Pin its sha256: the boot refuses any other image", value=bool(self.app.plan.sha256),
                       id="pin")
        yield problem_slot("sha256")
        yield Button("Create an image from this host…", id="create")

    def on_mount(self) -> None:
        self.query_one("#archives", DataTable).add_columns("archive", "format", "size")
        self.query_one("#progress", ProgressBar).display = False
        self.archives: list[tuple[str, str, int]] = []
        self.device = self.app.source_device()
        if self.device is None:
            self.query_one("#where", Static).update(
                "The source is not a block device here (NFS, or not present now): type the image's "
                "path on it.")
            self.query_one("#archives", DataTable).display = False
            self.query_one("#pin", Checkbox).disabled = True  # the hash needs to read the image here
            self.query_one("#image-path", Input).focus()
        else:
            self.query_one("#archives", DataTable).focus()
            self.query_one("#where", Static).update(f"Looking for archives on {self.device.path} …")
            self.list_archives()
        self.show_problems()

    @work(thread=True, exclusive=True, group="scan")
    def list_archives(self) -> None:
        from tui.devices import mounted_readonly
        from tui.images import find_archives

        try:
            with mounted_readonly(self.device) as top:
                found = find_archives(top)
                how = "mounted at " + top if self.device.mountpoints else "mounted read-only for a look"
        except OSError as e:
            self.app.call_from_thread(self.query_one("#where", Static).update, f"[red]{e}[/]")
            return
        self.app.call_from_thread(self.show_archives, found, how)

    def show_archives(self, found: list[tuple[str, str, int]], how: str) -> None:
        self.archives = found
        table = self.query_one("#archives", DataTable)
        table.clear()
        for rel, fmt, size in found:
            table.add_row(rel, fmt, human_size(size), key=rel)
        self.query_one("#where", Static).update(
            f"{len(found)} archive(s) on {self.device.path} ({how}); pick one, or type its path.")
        if self.app.plan.image in [a[0] for a in found]:
            table.move_cursor(row=[a[0] for a in found].index(self.app.plan.image))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "archives" and event.cursor_row < len(self.archives):
            self.choose(self.archives[event.cursor_row][0])
            self.inspect_image()

    def choose(self, image: str) -> None:
        self.app.plan.image = image
        self.app.image_info = None
        self.query_one("#image-path", Input).value = image

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "image-path":
            if event.value.strip() != self.app.plan.image:
                self.app.plan.image = event.value.strip()
                self.app.image_info = None
            self.show_problems()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "pin":
            if event.value:
                self.inspect_image()
            else:
                self.app.plan.sha256 = None
                self.show_problems()

    @work(thread=True, exclusive=True, group="inspect")
    def inspect_image(self) -> None:
        from textual.worker import get_current_worker

        from tui.devices import mounted_readonly
        from tui.images import ImageError, inspect

        if self.device is None or not self.app.plan.image:
            return
        pin = self.query_one("#pin", Checkbox).value
        bar = self.query_one("#progress", ProgressBar)
        worker = get_current_worker()
        self.app.call_from_thread(setattr, bar, "display", True)

        def progress(done: int, total: int) -> None:
            if worker.is_cancelled:
                raise ImageError("cancelled")
            self.app.call_from_thread(bar.update, total=total or None, progress=done)

        try:
            with mounted_readonly(self.device) as top:
                info = inspect(os.path.join(top, self.app.plan.image), with_sha256=pin,
                               ram=self.app.facts.ram, progress=progress)
        except (OSError, ImageError) as e:
            self.app.call_from_thread(self.query_one("#info", Static).update, f"[red]{e}[/]")
            return
        finally:
            self.app.call_from_thread(setattr, bar, "display", False)
        self.app.call_from_thread(self.show_info, info)

    def show_info(self, info) -> None:
        self.app.image_info = info
        if info.sha256:
            self.app.plan.sha256 = info.sha256
        self.query_one("#info", Static).update(
            f"{info.format}: {human_size(info.compressed)} packed, {human_size(info.uncompressed)} "
            f"unpacked, {info.files} files; tmpfs size {info.recommended_size} recommended"
            + (f"\nsha256 {info.sha256}" if info.sha256 else ""))
        self.show_problems()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create":
            default = ""
            if self.device is not None and self.device.mountpoints:
                default = os.path.join(self.device.mountpoints[0], "images/rootfs.tar.zst")
            self.app.push_screen(CreateImageModal(default), self._created)
        else:
            super().on_button_pressed(event)

    def _created(self, path: str | None) -> None:
        if path and self.device is not None and self.device.mountpoints:
            self.choose(os.path.relpath(path, self.device.mountpoints[0]))
            self.list_archives()
            self.inspect_image()


class CreateImageModal(ModalScreen[str | None]):
    """tmpfs-root image create, with its progress; Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    CreateImageModal { align: center middle; }
    CreateImageModal > Vertical { width: 90%; height: auto; border: thick $primary; background: $surface;
                                  padding: 1 2; }
    """

    def __init__(self, output: str):
        super().__init__()
        self.output = output
        self.running = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Create an image from this host[/b] (tmpfs-root image create)")
            with Horizontal(classes="field"):
                yield Label("Pack")
                yield Input(compact=True, value="/", id="from")
            with Horizontal(classes="field"):
                yield Label("Into")
                yield Input(compact=True, value=self.output, placeholder="/srv/images/rootfs.tar.zst", id="output")
            yield Static(id="message", classes="error")
            yield ProgressBar(id="bar", show_eta=True)
            with Horizontal(classes="row"):
                yield Button("Cancel", id="cancel")
                yield Button("Create", id="go", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go" and not self.running:
            self.create()
        elif event.button.id == "cancel":
            self.action_cancel()

    def action_cancel(self) -> None:
        if self.running:
            self.workers.cancel_group(self, "create")
        self.dismiss(None)

    @work(thread=True, exclusive=True, group="create")
    def create(self) -> None:
        from tui.image_create import CreateError, create, make_plan

        self.running = True
        bar = self.query_one("#bar", ProgressBar)
        try:
            plan = make_plan(self.query_one("#from", Input).value, self.query_one("#output", Input).value)
            made = create(plan, progress=lambda done, total, files, ftotal: self.app.call_from_thread(
                bar.update, total=total, progress=done))
        except CreateError as e:
            self.app.call_from_thread(self.query_one("#message", Static).update, f"error: {e}")
            return
        finally:
            self.running = False
        self.app.call_from_thread(self.dismiss, made.path)
