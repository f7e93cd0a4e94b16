"""Step 3, Image: the archives on the chosen volume (its mountpoint, or a private
read-only mount made and removed around each look), recognised by their first
bytes; format, sizes and file count read in a worker with a progress bar; an
optional sha256 pin; and "Create an image from this host".

Workers report through messages (found, progress, read, failed); only the message
handlers touch widgets."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Label, ProgressBar, Select, Static

from screens.base import EngineView, StepScreen, problem_slot
from tui.engine import ImageInfo, TmpfsRootError, escape, human_size, plan_field


@dataclass
class ArchivesFound(Message):
    found: list[tuple[str, str, int]]
    how: str


@dataclass
class ReadProgress(Message):
    done: int
    total: int


@dataclass
class ImageRead(Message):
    info: ImageInfo


@dataclass
class WorkFailed(Message):
    where: str  # the widget that shows the error
    error: str


class ImageScreen(StepScreen):
    NAME = "image"
    FIELDS = ("image", "sha256")

    def body(self) -> ComposeResult:
        yield Static(id="where", classes="help", markup=False)
        yield DataTable(id="archives", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="field"):
            yield Label(plan_field("image").label)
            yield Input(
                compact=True,
                value=self.engine.plan.image,
                placeholder=plan_field("image").placeholder,
                id="image-path",
            )
        yield problem_slot("image")
        yield ProgressBar(id="progress", show_eta=True)
        yield Static(id="info", markup=False)
        yield Checkbox(
            "Pin its sha256: the boot refuses any other image", value=bool(self.engine.plan.sha256), id="pin"
        )
        with Horizontal(classes="field", id="sha-row"):
            yield Label(plan_field("sha256").label)
            yield Input(
                compact=True,
                value=self.engine.plan.sha256 or "",
                placeholder=plan_field("sha256").placeholder,
                id="sha-text",
            )
        yield problem_slot("sha256")
        yield Button("Create an image from this host…", id="create")
        yield Static(id="created", classes="help", markup=False)

    def on_mount(self) -> None:
        self.query_one("#archives", DataTable).add_columns("archive", "format", "size")
        self.query_one("#progress", ProgressBar).display = False
        self.query_one("#created", Static).display = False
        self.archives: list[tuple[str, str, int]] = []
        self.device = self.engine.source_device()
        source = self.engine.source() if self.engine.plan.source else None
        over_http = source is not None and source.is_http
        # Served over HTTP(S), the image is not read here: its sha256 is typed (or pasted).
        self.query_one("#sha-row").display = over_http
        self.query_one("#pin", Checkbox).display = not over_http
        if over_http:
            assert source is not None
            self.query_one("#where", Static).update(
                Text(f"The boot fetches the image from {source.image_url('…')}: type its path there.")
            )
            self.query_one("#archives", DataTable).display = False
            self.query_one("#image-path", Input).focus()
        elif self.device is None:
            self.query_one("#where", Static).update(
                "The source is not a block device here (NFS, or not present now): type the image's path on it."
            )
            self.query_one("#archives", DataTable).display = False
            self.query_one("#pin", Checkbox).disabled = True  # the hash needs to read the image here
            self.query_one("#image-path", Input).focus()
        else:
            self.query_one("#archives", DataTable).focus()
            self.query_one("#where", Static).update(f"Looking for archives on {self.device.path} …")
            self.list_archives()
        self.show_problems()

    # ------------------------------------------------------------ workers
    @work(thread=True, exclusive=True, group="scan")
    def list_archives(self) -> None:
        try:
            found, how = self.engine.find_archives()
        except (OSError, TmpfsRootError) as e:
            self.post_message(WorkFailed("#where", str(e)))
            return
        self.post_message(ArchivesFound(found, how))

    @work(thread=True, exclusive=True, group="inspect")
    def inspect_image(self, pin: bool) -> None:
        try:
            info = self.engine.inspect_image(with_sha256=pin, progress=self.report_progress)
        except (OSError, TmpfsRootError) as e:
            self.post_message(WorkFailed("#info", str(e)))
            return
        self.post_message(ImageRead(info))

    def report_progress(self, done: int, total: int) -> None:  # in the worker's thread
        self.post_message(ReadProgress(done, total))

    # ----------------------------------------------------------- messages
    @on(ArchivesFound)
    def show_archives(self, message: ArchivesFound) -> None:
        self.archives = message.found
        table = self.query_one("#archives", DataTable)
        table.clear()
        for rel, fmt, size in message.found:
            table.add_row(Text(rel), fmt, human_size(size), key=rel)
        assert self.device is not None
        self.query_one("#where", Static).update(
            f"{len(message.found)} archive(s) on {self.device.path} ({message.how}); pick one, or type its path."
        )
        names = [a[0] for a in message.found]
        if self.engine.plan.image in names:
            table.move_cursor(row=names.index(self.engine.plan.image))

    @on(ReadProgress)
    def show_progress(self, message: ReadProgress) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.display = True
        bar.update(total=message.total or None, progress=message.done)

    @on(ImageRead)
    def show_info(self, message: ImageRead) -> None:
        info = message.info
        self.query_one("#progress", ProgressBar).display = False
        if info.pin:
            self.engine.edit(sha256=info.pin)
        pinned = ""
        if info.pin and info.pin != info.sha256:
            pinned = f"\npin {info.pin} (of the index, which lists every shard's)\nsha256 of the file {info.sha256}"
        elif info.pin:
            pinned = f"\nsha256 {info.pin}"
        self.query_one("#info", Static).update(
            f"{info.format}{self.shard_note(info)}: {human_size(info.compressed)} packed, "
            f"{human_size(info.uncompressed)} "
            f"unpacked, {info.files} files; tmpfs size {info.recommended_size} recommended" + pinned
        )
        self.show_problems()

    @staticmethod
    def shard_note(info) -> str:
        if not info.shards:
            return ""
        return f" ({sum(p['kind'] == 'files' for p in info.shards)} shards, unpacked in parallel)"

    @on(WorkFailed)
    def show_failure(self, message: WorkFailed) -> None:
        self.query_one("#progress", ProgressBar).display = False
        self.query_one(message.where, Static).update(Text(escape(message.error), style="red"))

    # --------------------------------------------------------------- input
    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "archives" and event.cursor_row < len(self.archives):
            self.choose(self.archives[event.cursor_row][0])
            self.inspect_image(self.query_one("#pin", Checkbox).value)

    def choose(self, image: str) -> None:
        self.engine.edit(image=image)
        self.query_one("#image-path", Input).value = image

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "image-path":
            if event.value.strip() != self.engine.plan.image:
                self.engine.edit(image=event.value.strip())
            self.show_problems()
        elif event.input.id == "sha-text":
            self.engine.edit(sha256=event.value.strip() or None)
            self.show_problems()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "pin":
            if event.value:
                if self.device is not None and self.engine.plan.image:
                    self.inspect_image(True)
            else:
                self.engine.edit(sha256=None)
                self.show_problems()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "create":
            default = ""
            if self.device is not None and self.device.mountpoints:
                default = os.path.join(self.device.mountpoints[0], "images/rootfs.tar.zst")
            self.app.push_screen(CreateImageModal(default), self._created)
        else:
            super().on_button_pressed(event)

    def _created(self, made: Packed | None) -> None:
        # What image create said beside the image (tar's warnings, partial files it removed).
        notes = made.notes if made is not None else []
        created = self.query_one("#created", Static)
        created.update("\n".join(notes))
        created.display = bool(notes)
        path = made.path if made is not None else None
        if path and self.device is not None and self.device.mountpoints:
            self.choose(os.path.relpath(path, self.device.mountpoints[0]))
            self.list_archives()
            self.inspect_image(self.query_one("#pin", Checkbox).value)


@dataclass
class PackProgress(Message):
    done: int
    total: int


@dataclass
class Packed(Message):
    path: str
    notes: list[str]  # Created.notes(): escaped, shown as they are


@dataclass
class WouldPack(Message):
    """A dry run's answer: what would be packed (Engine.image_dry_run's lines, escaped)."""

    lines: list[str]


#: The formats image create writes, as the dialog offers them (zst-1: --shards 1).
CREATE_FORMATS = {
    "zst": "zstd, sharded (recommended: unpacked on every core)",
    "zst-1": "zstd, one stream",
    "gz": "gzip",
    "xz": "xz (smallest, slowest to unpack)",
    "lz4": "lz4 (fastest, largest)",
    "tar": "tar, uncompressed",
}


class CreateImageModal(EngineView, ModalScreen[Packed | None]):
    """tmpfs-root image create, with its progress; Escape cancels (tar and the compressor are
    stopped, nothing is left at the output)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    CreateImageModal { align: center middle; }
    CreateImageModal .field { margin-bottom: 0; }
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
                yield Input(compact=True, value=self.output, placeholder="e.g. /srv/images/rootfs.tar.zst", id="output")
            with Horizontal(classes="field"):
                yield Label("Format")
                yield Select(
                    [(label, fmt) for fmt, label in CREATE_FORMATS.items()],
                    compact=True,
                    value="zst",
                    allow_blank=False,
                    id="format",
                )
            with Horizontal(classes="field"):
                yield Label("Leave out")
                yield Input(compact=True, placeholder="e.g. /var/cache/apt/archives/*.deb /srv/big", id="exclude")
            with Horizontal(classes="field"):
                yield Label("Also pack")
                yield Input(compact=True, placeholder="e.g. /home", id="with")
            yield Static(
                "Patterns and mounts separated by spaces. Always left out: the contents of /proc, /sys, "
                "/dev, /run and /tmp, swap files and the output itself.",
                classes="help",
            )
            yield Static(id="message", classes="error", markup=False)
            yield ProgressBar(id="bar", show_eta=True)
            with Horizontal(classes="row"):
                yield Button("Cancel", id="cancel")
                yield Button("Create", id="go", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "go" and not self.running:
            self.running = True
            self.create(
                self.query_one("#from", Input).value,
                self.query_one("#output", Input).value,
                str(self.query_one("#format", Select).value),
                self.query_one("#exclude", Input).value.split(),
                self.query_one("#with", Input).value.split(),
            )
        elif event.button.id == "cancel":
            self.action_cancel()

    def action_cancel(self) -> None:
        if self.running:
            self.engine.cancel()  # stops tar and the compressor; the worker ends with Cancelled
        self.dismiss(None)

    @work(thread=True, exclusive=True, group="create")
    def create(self, source: str, output: str, fmt: str, excludes: list[str], with_mounts: list[str]) -> None:
        try:
            fmt, shards = ("zst", 1) if fmt == "zst-1" else (fmt, "auto")
            plan = self.engine.plan_image(
                source, output, fmt, excludes=excludes, with_mounts=with_mounts, shards=shards
            )
            if self.engine.dry_run:  # what it would pack, and nothing written
                self.post_message(WouldPack(self.engine.image_dry_run(plan)))
                return
            made = self.engine.create_image(
                plan, progress=lambda done, total, files, ftotal: self.post_message(PackProgress(done, total))
            )
        except TmpfsRootError as e:
            self.post_message(WorkFailed("#message", f"error: {e}"))
            return
        self.post_message(Packed(made.path, made.notes()))

    @on(PackProgress)
    def show_progress(self, message: PackProgress) -> None:
        self.query_one("#bar", ProgressBar).update(total=message.total, progress=message.done)

    @on(WorkFailed)
    def show_failure(self, message: WorkFailed) -> None:
        self.running = False
        if self.is_mounted:
            self.query_one(message.where, Static).update(message.error)

    @on(WouldPack)
    def show_what_would_be_packed(self, message: WouldPack) -> None:
        self.running = False
        if self.is_mounted:
            self.query_one("#message", Static).update("\n".join(message.lines))

    @on(Packed)
    def done(self, message: Packed) -> None:
        self.running = False
        self.dismiss(message)
