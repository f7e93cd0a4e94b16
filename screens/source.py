"""Step 2, Source volume: the block devices (disk → partitions / volumes) with their
identifiers, a chooser for the identifier form (recommended one preselected,
ambiguous ones flagged) with the resulting root=tmpfs:… live, and an NFS tab
validated as typed. The list follows hotplug (pyudev monitor)."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Select, Static, TabbedContent, TabPane

from screens.base import StepScreen, problem_slot
from tui.engine import BlockDevice, human_size, no_filesystem, plan_field

#: The ip= field, on the NFS and the HTTP(S) tab alike.
NETWORK = plan_field("network")


def device_detail(device: BlockDevice) -> str:
    """One line on the highlighted device: what the table leaves out."""
    facts = [device.type]
    if device.mountpoints:
        facts.append("mounted at " + ", ".join(device.mountpoints))
    else:
        facts.append("not mounted")
    if device.partuuid:
        facts.append(f"PARTUUID {device.partuuid}")
    if device.model:
        facts.append(f"model {device.model}")
    why = no_filesystem(device)
    if why:  # the very words of `tmpfs-root devices --all`
        facts.append(why)
    return f"{device.path}: " + "; ".join(facts)


class SourceScreen(StepScreen):
    NAME = "source"
    FIELDS = ("source", "network")

    def body(self) -> ComposeResult:
        with TabbedContent(id="tabs"):
            with TabPane("Block devices", id="block"):
                yield DataTable(id="devices", cursor_type="row", zebra_stripes=True)
                yield Static(id="device-detail", classes="help", markup=False)
                with Horizontal(classes="field"):
                    yield Label("Identify it by")
                    yield Select([], compact=True, id="identifier", prompt="pick a device above")
            with TabPane("NFS", id="nfs"):
                with Vertical():
                    for fid, label, placeholder in (
                        ("server", "Server", "e.g. 10.0.0.11 or nfs.example.org"),
                        ("export", "Export", "e.g. /srv/images"),
                        ("options", "Options", "optional, comma separated, e.g. vers=4.2"),
                        ("ip", NETWORK.label, NETWORK.placeholder),
                    ):
                        with Horizontal(classes="field"):
                            yield Label(label)
                            yield Input(compact=True, placeholder=placeholder, id=f"nfs-{fid}")
                    with Horizontal(classes="field"):
                        yield Label("Version")
                        yield Select(
                            [("NFSv4 (nfs4:)", "nfs4"), ("NFSv3 (nfs:)", "nfs")],
                            compact=True,
                            value="nfs4",
                            allow_blank=False,
                            id="nfs-scheme",
                        )
                    yield problem_slot("network")
            with TabPane("HTTP(S)", id="http"):
                with Vertical():
                    for fid, label, placeholder in (
                        ("url", "URL", "e.g. http://10.0.0.11:8080/images or https://images.example.org/"),
                        ("ip", NETWORK.label, NETWORK.placeholder),
                    ):
                        with Horizontal(classes="field"):
                            yield Label(label)
                            yield Input(compact=True, placeholder=placeholder, id=f"http-{fid}")
                    yield Static(
                        "The image is streamed into RAM at boot. Over plain http it must be pinned by its "
                        "sha256 (next step); https checks the server's certificate.",
                        classes="help",
                    )
        yield Static(id="cmdline", classes="cmdline")
        yield problem_slot("source")

    def on_mount(self) -> None:
        table = self.query_one("#devices", DataTable)
        # What fits 80 columns whole; the type, mountpoints, model and PARTUUID of the
        # highlighted device are on the line below the table.
        table.add_columns("device", "size", "fs", "label", "UUID")
        self.fill_devices()
        if not self.engine.plan.source:  # start on the first device that can hold an image
            usable = [i for i, (d, _) in enumerate(self.rows) if d.usable]
            if usable:
                table.move_cursor(row=usable[0])
        self.restore_choice()
        table.focus()
        if self.engine.facts.watch and self.engine.facts.devices is not None:
            self.watch_hotplug()

    def fill_devices(self) -> None:
        table = self.query_one("#devices", DataTable)
        table.clear()
        self.rows = [
            (d, ("  " * (depth - 1) + "└ " if depth else "") + d.path) for d, depth in self.engine.device_tree()
        ]
        for d, shown in self.rows:  # names from the devices: shown literally, never as markup
            table.add_row(
                *(
                    Text(c)
                    for c in (
                        shown,
                        human_size(d.size),
                        d.fstype or "",
                        d.label or "",
                        d.uuid or "",
                    )
                ),
                key=d.path,
            )
        if not self.rows:
            self.query_one("#cmdline", Static).update("No block device found; use the NFS or HTTP(S) tab.")

    def restore_choice(self) -> None:
        """Show what the plan already says (going back, or modifying an installed setup)."""
        source = self.engine.source() if self.engine.plan.source else None
        if source and source.is_nfs:
            self.query_one("#tabs", TabbedContent).active = "nfs"
            self.query_one("#nfs-scheme", Select).value = source.nfs_scheme
            self.query_one("#nfs-server", Input).value = source.nfs_server
            self.query_one("#nfs-export", Input).value = source.nfs_path
            self.query_one("#nfs-options", Input).value = source.nfs_options
            self.query_one("#nfs-ip", Input).value = self.engine.plan.network or ""
        elif source and source.is_http:
            self.query_one("#tabs", TabbedContent).active = "http"
            self.query_one("#http-url", Input).value = source.value
            self.query_one("#http-ip", Input).value = self.engine.plan.network or ""
        else:
            device = self.engine.source_device()
            if device is not None:
                for i, (d, _) in enumerate(self.rows):
                    if d.path == device.path:
                        self.query_one("#devices", DataTable).move_cursor(row=i)
                self.offer_identifiers(device, keep=self.engine.plan.source)
        self.refresh_cmdline()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "devices" or not self.rows or event.cursor_row >= len(self.rows):
            return
        device = self.rows[event.cursor_row][0]
        self.query_one("#device-detail", Static).update(device_detail(device))
        current = self.engine.source_device()
        self.offer_identifiers(device, keep=self.engine.plan.source if current is device else None)

    def offer_identifiers(self, device: BlockDevice, keep: str | None = None) -> None:
        select = self.query_one("#identifier", Select)
        if not device.usable:  # a whole disk, a PV: nothing to name; Next says what is needed
            select.set_options([])
            if self.engine.source_device() is not None or not self.engine.plan.source.startswith(
                ("nfs", "NFS", "http")
            ):
                self.engine.edit(source="")
            self.query_one("#cmdline", Static).update(
                Text(f"{device.path}: {no_filesystem(device)}; pick a partition or volume that has one.")
            )
            return
        choices = self.engine.identifiers(device)
        select.set_options(choices)
        select.value = keep if keep in [c[1] for c in choices] else choices[0][1]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "identifier" and isinstance(event.value, str):  # not Select's "no choice"
            self.engine.edit(source=event.value)
            self.block_choice = event.value
        elif event.select.id == "nfs-scheme":
            self.compose_nfs()
        self.refresh_cmdline()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("nfs-"):
            self.compose_nfs()
            self.refresh_cmdline()
        elif event.input.id and event.input.id.startswith("http-"):
            self.compose_http()
            self.refresh_cmdline()

    def compose_nfs(self) -> None:
        value = {f: self.query_one(f"#nfs-{f}", Input).value.strip() for f in ("server", "export", "options", "ip")}
        if not (value["server"] or value["export"]):
            return
        scheme = self.query_one("#nfs-scheme", Select).value
        self.engine.edit(
            source=f"{scheme}:{value['server']}:{value['export']}"
            + (f",{value['options']}" if value["options"] else ""),
            network=value["ip"] or None,
        )

    def compose_http(self) -> None:
        url = self.query_one("#http-url", Input).value.strip()
        if url:
            self.engine.edit(source=url, network=self.query_one("#http-ip", Input).value.strip() or None)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "nfs":
            self.compose_nfs()
        elif event.pane.id == "http":
            self.compose_http()
        else:
            # Back to a block device: ip= belongs to the network only, and the identifier chosen before
            # (LABEL=, say) comes back rather than the recommended one.
            self.engine.edit(network=None)
            table = self.query_one("#devices", DataTable)
            if self.rows and table.cursor_row < len(self.rows):
                self.offer_identifiers(self.rows[table.cursor_row][0], keep=getattr(self, "block_choice", None))
        self.refresh_cmdline()

    def refresh_cmdline(self) -> None:
        if self.engine.plan.source:
            self.query_one("#cmdline", Static).update(
                Text("Kernel command line: " + " ".join(self.engine.source_args()))
            )
        self.show_problems()

    # --------------------------------------------------------------- hotplug
    @work(thread=True, exclusive=True, group="hotplug", exit_on_error=False)  # a lost watcher is no reason to quit
    def watch_hotplug(self) -> None:
        from textual.worker import get_current_worker

        try:
            import pyudev

            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by("block")
            monitor.start()
        except Exception:
            return  # no udev events here: the list stays as it was
        worker = get_current_worker()
        while not worker.is_cancelled and self.is_mounted:
            if monitor.poll(timeout=0.5) is not None and not worker.is_cancelled:
                try:
                    self.app.call_from_thread(self.rediscover)
                except RuntimeError:  # the app is closing
                    return

    def rediscover(self) -> None:
        from textual.css.query import NoMatches

        if not self.is_mounted:  # an event that arrived as the screen went away
            return
        self.engine.rediscover()
        try:
            self.fill_devices()
            self.restore_choice()
        except NoMatches:  # being removed meanwhile
            pass
