"""The TUI, driven by Textual's Pilot: the whole flow on real loop devices under a real
udevd, validation messages in the CLI's words, back navigation, the confirmation, a
failing apply with its rollback; snapshots of every screen at 80×24 and 120×40.

The snapshot tests pass the app fixed Facts (devices, RAM, free space) instead of
the machine's: a screenshot must not change with the machine it is taken on. The
flow test uses the machine's real devices."""

import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from rich.console import Console

from screens.app import TmpfsRootApp
from tests.infra import FAKE_KVER, Part, loop_device, make_disk_image, make_fake_target, run_cli, sh, tree_digest, udevd
from tui.devices import BlockDevice, no_filesystem
from tui.engine import Facts

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


def make_volume_content(where: Path) -> Path:
    """A volume holding one small image, the same bytes on every machine (the snapshots show
    its sizes), and a file that is not an archive."""
    tree = where / ".image-tree"
    (tree / "etc").mkdir(parents=True, exist_ok=True)
    (tree / "etc/hostname").write_text("tmpfs-root-test\n")
    (tree / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    (where / "images").mkdir(parents=True, exist_ok=True)
    sh(
        "tar",
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-C",
        tree / "etc",
        "-caf",
        where / "images/rootfs.tar.zst",
        "hostname",
        "os-release",
    )
    shutil.rmtree(tree)
    (where / "images/notes.txt").write_text("not an archive\n")
    return where


async def settle(pilot) -> None:
    """Wait for the app's work (the hotplug watcher aside: it runs as long as its screen)."""
    work = [w for w in pilot.app.workers if w.group != "hotplug"]
    if work:  # an empty list would mean "all of them"
        await pilot.app.workers.wait_for_complete(work)


async def settle_until(pilot, done, timeout: float = 60.0) -> None:
    """Settle until *done()* holds: work that starts when other work ends (an inspection
    after a create) is not among the workers of the first wait."""
    import time

    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        await settle(pilot)
        await pilot.pause(0.05)


async def walk_to(pilot, screen_name: str) -> None:
    """Press Next (ctrl+n) until *screen_name*, waiting for workers on the way."""
    for _ in range(8):
        await settle(pilot)
        await pilot.pause()
        if type(pilot.app.screen).__name__ == screen_name:
            return
        await pilot.press("ctrl+n")
    raise AssertionError(f"stuck on {type(pilot.app.screen).__name__}")


# ------------------------------------------------------------ the whole flow
@pytest.mark.udev
async def test_the_whole_flow_on_a_loop_device_reaches_a_dry_run_apply(tmp_path):
    """Real devices: a disk image with an ext4 partition holding an image, not mounted, so
    the Image step mounts it read-only for a look; the target is a directory; dry run."""
    target = make_fake_target(tmp_path / "target")
    make_disk_image(
        tmp_path / "disk.img",
        [Part(64, fs="ext4", label="TUIIMG", content=make_volume_content(tmp_path / "vol"))],
        tmp_path,
    )
    with loop_device(tmp_path / "disk.img") as dev, udevd():
        app = TmpfsRootApp(str(target), dry_run=True)
        app.facts.watch = False
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert type(app.screen).__name__ == "OverviewScreen"
            await pilot.press("ctrl+n")
            await pilot.pause()
            rows = app.screen.rows
            index = [d.path for d, _ in rows].index(f"{dev}p1")
            current = app.screen.query_one("#devices").cursor_row
            for _ in range(abs(index - current)):
                await pilot.press("down" if index > current else "up")
            await pilot.pause()
            device = rows[index][0]
            assert app.plan.source == f"UUID={device.uuid}"  # the recommended form, preselected
            await walk_to(pilot, "ImageScreen")
            archives = [a[0] for a in app.screen.archives]
            assert archives == ["images/rootfs.tar.zst"]  # by magic bytes: notes.txt is not one
            app.screen.query_one("#archives").focus()
            await pilot.press("enter")
            await settle(pilot)
            await pilot.pause()
            assert app.plan.image == "images/rootfs.tar.zst"
            assert app.image_info is not None and app.image_info.files == 2
            await walk_to(pilot, "SizeScreen")
            assert app.plan.size == app.image_info.recommended_size  # prefilled
            await walk_to(pilot, "ReviewScreen")
            assert "root=tmpfs:UUID=" in str(app.screen.query_one("#cmdline").render())
            await pilot.press("ctrl+n")
            await pilot.pause()
            assert type(app.screen).__name__ == "ConfirmModal"
            await pilot.click("#confirm")
            await settle(pilot)
            await pilot.pause()
            assert type(app.screen).__name__ == "ApplyScreen"
            result = str(app.screen.query_one("#result").render())
            assert "Dry run complete" in result and f"grub-reboot tmpfs-root-{FAKE_KVER}" in result
        assert not [
            line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "tmpfs-root-source." in line
        ]  # the look-only mount is gone
    assert app.plan.source == f"UUID={device.uuid}" and app.plan.boot == "once"
    assert tree_digest(target) == tree_digest(make_fake_target(tmp_path / "pristine"))


# ------------------------------------------------------- fixed-facts screens
#: Where the snapshot tests put their target and volume: a fixed path, since it shows on
#: screen (the snapshots must not depend on where a run puts its files). Those tests stay on
#: one xdist worker; every other test has a directory of its own.
SNAP_ROOT = Path("/tmp/tmpfs-root-tui-snapshots")


@pytest.fixture
def fixed(request, tmp_path):
    """A target and a mounted volume, and fixed facts."""
    # A short path of its own otherwise: paths show on screen, and pytest's own are longer
    # than any real mountpoint (the 80×24 test would find them cut).
    root = SNAP_ROOT if "snap_compare" in request.fixturenames else Path(tempfile.mkdtemp(prefix="tr-tui-"))
    shutil.rmtree(root, ignore_errors=True)
    target = make_fake_target(root / "target")
    vol = make_volume_content(root / "vol")
    devices = [
        BlockDevice(
            "vda",
            "/dev/vda",
            "disk",
            20 << 30,
            devnum="254:0",
            model="QEMU HARDDISK",
            why_no_fs="a partition table ('dos'): its partitions hold the filesystems",
        ),
        BlockDevice(
            "vda1",
            "/dev/vda1",
            "part",
            19 << 30,
            devnum="254:1",
            fstype="ext4",
            label="IMGVOL",
            uuid="0a1b2c3d-1111-2222-3333-444455556666",
            partuuid="6f1c0001-01",
            mountpoints=[str(vol)],
            parent="vda",
        ),
        BlockDevice(
            "vdb",
            "/dev/vdb",
            "disk",
            8 << 30,
            devnum="254:16",
            fstype="ext4",
            label="IMGVOL",
            uuid="9e8d7c6b-aaaa-bbbb-cccc-ddddeeeeffff",
        ),
    ]
    facts = Facts(devices, 8 << 30, 0, 900 << 20, watch=False)
    yield target, facts
    shutil.rmtree(root, ignore_errors=True)


def app_for(fixed, dry_run=True):
    target, facts = fixed
    return TmpfsRootApp(str(target), dry_run=dry_run, facts=facts)


async def pick_image(pilot):
    await walk_to(pilot, "ImageScreen")
    pilot.app.screen.query_one("#archives").focus()
    await pilot.press("enter")
    await settle(pilot)
    await pilot.pause()


async def open_confirmation(pilot):
    """From the start to the Apply confirmation, with the image picked from the list."""
    await pick_image(pilot)
    await walk_to(pilot, "ReviewScreen")
    await pilot.press("ctrl+n")
    await pilot.pause()
    assert type(pilot.app.screen).__name__ == "ConfirmModal"


async def start_apply(pilot):
    """From the start through the confirmation, confirmed with the mouse."""
    await open_confirmation(pilot)
    await pilot.click("#confirm")


STOPS = {
    "overview": None,
    "source": "SourceScreen",
    "image": "image",
    "size": "SizeScreen",
    "boot": "BootScreen",
    "review": "ReviewScreen",
    "apply": "apply",
}


@pytest.mark.xdist_group("tui-snapshots")
@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
@pytest.mark.parametrize("step", STOPS, ids=list(STOPS))
def test_snapshot_of_every_screen(fixed, snap_compare, step, size, monkeypatch, tmp_path):
    # The Review and Apply screens list the module's files with their sizes: the pictures
    # take a stand-in module of fixed sizes (same names), so that an edit of the shell does
    # not change them; what is drawn is the same.
    from tui import dracut

    stand_in = tmp_path / "module"
    stand_in.mkdir()
    for path in dracut.MODULE_SOURCE.glob("*.sh"):
        (stand_in / path.name).write_text("#!/bin/sh\n# a stand-in of fixed size for the screen snapshots\n")
    monkeypatch.setattr(dracut, "MODULE_SOURCE", stand_in)

    async def run_before(pilot):
        await walk_to_stop(pilot, step)
        # A focused field's cursor blinks on a timer: on a loaded machine the picture could
        # catch it off. Steady, it is drawn as the picture holds it.
        from textual.widgets import Input

        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()
        if STOPS[step] == "apply":
            screen = pilot.app.screen
            screen.query_one("#elapsed").update("elapsed 0 s")  # differs run to run
            # The screen scrolls to its summary after a refresh once it is done; on a loaded
            # machine the picture could be taken before that refresh. Where it ends, now.
            await pilot.pause()
            screen.query_one("#log").scroll_end(animate=False)
            screen.query_one("#body").scroll_to_widget(screen.query_one("#result"), top=True, animate=False)
            await pilot.pause()
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()

    assert snap_compare(app_for(fixed), terminal_size=SIZES[size], run_before=run_before)


async def walk_to_stop(pilot, step: str) -> None:
    """From the start to the screen of *step* (a key of STOPS), as the snapshots do."""
    await settle(pilot)  # the Overview's checks
    await pilot.pause()
    stop = STOPS[step]
    if stop is None:
        return
    if stop == "image":
        await pick_image(pilot)
        return
    if stop == "apply":
        await open_confirmation(pilot)
        await pilot.press("tab", "enter")  # keys, not a click: a mouse left hovering shows
        # The worker's end is not the screen's: its Finished message (which stops the clock,
        # writes the summary and scrolls to it) may still be queued on a loaded machine.
        await settle_until(pilot, lambda: getattr(pilot.app.screen, "finished", False))
        await pilot.pause()
        return
    if stop != "SourceScreen":
        await pick_image(pilot)
    await walk_to(pilot, stop)


def screen_text(app) -> str:
    """The screen as plain text, exactly as the terminal shows it (what a screenshot holds)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def words(text: str) -> set[str]:
    """The words of *text* that carry meaning: two letters or digits at least, punctuation
    around them dropped (a number alone changes with time, e.g. the elapsed seconds)."""
    found = set()
    for token in text.split():
        token = token.strip("\"'“”‘’()[]{}<>,.;:!?…·─━│╭╮╰╯▔▁▊▎▐▌▇▆▅▄▃▂")
        if sum(c.isalnum() for c in token) >= 2 and not token.isdigit():
            found.add(token)
    return found


async def reachable_words(pilot) -> set[str]:
    """Every word on the screen, and every word reached by scrolling a scrollable part of it
    up and down (PageDown, the wheel); never by scrolling sideways: a word whose end is off
    to the right is cut."""
    app = pilot.app
    app.clear_notifications()
    await pilot.pause()
    seen = words(screen_text(app))
    for widget in list(app.screen.query("*")):
        if not widget.display or widget.max_scroll_y <= 0:
            continue
        widget.scroll_visible(animate=False)
        step = max(1, widget.scrollable_content_region.height - 1)
        for y in range(0, int(widget.max_scroll_y) + step, step):
            widget.scroll_to(y=y, animate=False, immediate=True)
            await pilot.pause()
            seen |= words(screen_text(app))
    return seen


CUT_CASES = [pytest.param(step, False, id=step) for step in STOPS] + [
    pytest.param(step, True, id=f"{step}-no-dracut")
    for step in STOPS
    if step != "apply"  # Apply refuses there
]


@pytest.mark.parametrize(("step", "failed_preflight"), CUT_CASES)
async def test_nothing_is_cut_at_80x24(fixed, step, failed_preflight):
    """Every word a screen shows on a wide terminal is shown whole at 80×24 too (scrolling
    down allowed). A cell cut by a column ("install the dracut pa"), a line cut with "…",
    a summary below the screen that nothing scrolls to: each leaves a word missing."""
    target, _ = fixed
    if failed_preflight:
        (target / "usr/bin/dracut").unlink()
    seen = {}
    app = app_for(fixed)
    async with app.run_test(size=(240, 70)) as pilot:
        await walk_to_stop(pilot, step)
        for size in ((240, 70), (80, 24)):  # one walk, the terminal resized under it
            await pilot.resize_terminal(*size)
            await pilot.pause()
            seen[size] = await reachable_words(pilot)
    missing = seen[(240, 70)] - seen[(80, 24)]
    assert not missing, f"cut or unreachable at 80×24: {sorted(missing)}"


# ------------------------------------------------------------- behaviour
async def empty_size_field(pilot) -> None:
    """From the start to the Size step, its (prefilled) field emptied and focused for typing."""
    await pick_image(pilot)
    await walk_to(pilot, "SizeScreen")
    size = pilot.app.screen.query_one("#size")
    size.value = ""
    size.focus()


async def test_errors_show_beside_the_field_in_the_clis_words(fixed):
    target, _ = fixed
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await empty_size_field(pilot)
        await pilot.press(*"3Q")
        await pilot.pause()
        shown = str(app.screen.query_one("#problem-size").render())
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "SizeScreen"  # Next refused
    cli = run_cli(
        "plan", f"--root={target}", f"--source={app.plan.source}", "--image=images/rootfs.tar.zst", "--size=3Q"
    )
    line = [x for x in cli.stderr.splitlines() if "--size" in x][0].removeprefix("tmpfs-root: ")
    assert shown.replace("\n", " ") == line


async def test_escape_goes_back_and_keeps_what_was_chosen(fixed):
    app = app_for(fixed)
    async with app.run_test(size=(80, 24)) as pilot:
        await pick_image(pilot)
        await walk_to(pilot, "SizeScreen")
        chosen = app.plan.size
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "ImageScreen"
        assert app.screen.query_one("#image-path").value == "images/rootfs.tar.zst"
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "SourceScreen"
        assert str(app.screen.query_one("#identifier").value) == app.plan.source
        await walk_to(pilot, "SizeScreen")
        assert app.screen.query_one("#size").value == chosen


async def test_ambiguous_labels_are_flagged(fixed):
    from tui.devices import identifier_choices

    _, facts = fixed
    labels = dict((v, k) for k, v in identifier_choices(facts.devices[1], facts.devices))
    assert "(recommended)" in labels["UUID=0a1b2c3d-1111-2222-3333-444455556666"]
    assert "ambiguous: 2 devices" in labels["LABEL=IMGVOL"]


async def test_cancelling_the_confirmation_writes_nothing(fixed):
    target, _ = fixed
    before = tree_digest(target)
    app = app_for(fixed, dry_run=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_confirmation(pilot)
        assert app.screen.focused.id == "cancel"  # Enter alone changes nothing
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "ReviewScreen"
    assert tree_digest(target) == before


def target_dracut(target: Path, body: str) -> None:
    """Give the fake target a dracut of its own, run under chroot with a static busybox."""
    (target / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/busybox", target / "bin/busybox")
    (target / "bin/sh").unlink(missing_ok=True)  # the fake target's stand-in, never run
    (target / "bin/sh").symlink_to("busybox")
    (target / "usr/bin/dracut").write_text("#!/bin/sh\n" + body)


@pytest.mark.chroot  # the target's dracut runs under chroot
async def test_a_failing_apply_shows_the_step_and_the_rollback(fixed):
    """A real apply (not a dry run) into the fake target, whose dracut fails: it runs under
    chroot with a static busybox as its shell."""
    target, _ = fixed
    target_dracut(target, "echo 'dracut: simulated failure: no space left'\nexit 1\n")
    before = tree_digest(target)
    app = app_for(fixed, dry_run=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await start_apply(pilot)
        await settle(pilot)
        await pilot.pause()
        result = str(app.screen.query_one("#result").render())
        assert f"step 'build the initramfs for {FAKE_KVER}' failed" in result
        assert "Rolled back" in result and "as it was before" in result
        assert f"note: the log of this run is {os.environ['TMPFS_ROOT_LOG_DIR']}" in result  # as the CLI says it
        log = "\n".join(str(line) for line in app.screen.query_one("#log").lines)
        assert "simulated failure" in log
    assert tree_digest(target) == before


async def test_command_palette_offers_the_steps(fixed):
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Step 4: Size" in titles and "Review and apply" in titles
        app.goto("boot")
        await pilot.pause()
        assert type(app.screen).__name__ == "BootScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "SizeScreen"  # the steps before it are stacked


# ------------------------------------------------------------- tmux
class Tmux:
    """The real program in a real terminal (tmux): keys in, screen text out."""

    def __init__(self, name: str, command: str, size: tuple[int, int]):
        self.session = f"tmpfs-root-test-{name}"
        repo = Path(__file__).resolve().parent.parent
        width, height = size
        sh("tmux", "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height),
           f"cd {repo} && {command}; sleep 60")  # fmt: skip

    def screen(self) -> str:
        return sh("tmux", "capture-pane", "-p", "-t", self.session).stdout

    def keys(self, *keys: str) -> None:
        for key in keys:  # one key per call: Escape must go alone, or it arrives as Alt+key
            sh("tmux", "send-keys", "-t", self.session, key)
            time.sleep(0.4)

    def type(self, text: str) -> None:
        sh("tmux", "send-keys", "-t", self.session, "-l", text)
        time.sleep(0.4)

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared:\n{self.screen()}")

    def nfs_source(self) -> None:
        """On the Source step: over to the NFS tab, type a server and an export."""
        self.keys("BTab", "Right")  # the tab bar: over to NFS
        self.wait_for("Server")
        self.keys("Tab")
        self.type("10.0.0.11")
        self.keys("Tab")
        self.type("/srv/images")
        self.wait_for("root=tmpfs:NFS=nfs4:10.0.0.11:/srv/images")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


@pytest.mark.needs("tmux")
@pytest.mark.slow
def test_a_user_in_tmux_converts_a_target_in_a_dry_run(tmp_path):
    """The real program in a real terminal: keys in, screen text out (NFS source, typed)."""
    target = make_fake_target(tmp_path / "target")
    tmux = Tmux(tmp_path.name, f"python3 -m tui --root {target} --dry-run", (120, 40))
    try:
        tmux.wait_for("Step 1 of 7")
        tmux.keys("C-n")
        tmux.wait_for("Step 2 of 7")
        tmux.nfs_source()
        tmux.keys("C-n")
        tmux.wait_for("Step 3 of 7")
        tmux.type("rootfs.tar.zst")
        tmux.keys("C-n")
        tmux.wait_for("Step 4 of 7")
        tmux.keys("C-n")
        tmux.wait_for("Step 5 of 7")
        tmux.keys("C-n")
        shown = tmux.wait_for("Step 6 of 7")
        assert "rd.neednet=1" in shown and "ip=dhcp" in shown
        tmux.keys("C-n")
        tmux.wait_for("Apply to")
        tmux.keys("Tab", "Enter")  # from Cancel over to Apply
        tmux.wait_for("Dry run complete")
        tmux.keys("Escape")
        tmux.wait_for("Step 6 of 7")  # back to the review after the apply
    finally:
        tmux.close()
    assert tree_digest(target) == tree_digest(make_fake_target(tmp_path / "pristine"))


@pytest.mark.needs("tmux")
@pytest.mark.slow
def test_a_dry_run_in_tmux_walks_past_a_failed_preflight_to_the_review(tmp_path):
    """No dracut in the target, 80×24: the Overview shows the failure whole, the dry run
    walks on to the Review, which names the problem; only Apply refuses."""
    target = make_fake_target(tmp_path / "target")
    (target / "usr/bin/dracut").unlink()
    before = tree_digest(target)
    tmux = Tmux(tmp_path.name, f"python3 -m tui --root {target} --dry-run", (80, 24))
    try:
        shown = tmux.wait_for("Cannot convert")
        words = " ".join(shown.split())
        assert "✘ fail" in shown and "--no-install-recommends dracut-core" in words  # whole, wrapped
        tmux.keys("C-n")
        shown = tmux.wait_for("Step 2 of 7")
        tmux.nfs_source()
        tmux.keys("C-n")
        tmux.wait_for("Step 3 of 7")
        tmux.type("rootfs.tar.zst")
        for step in (4, 5, 6):
            tmux.keys("C-n")
            shown = tmux.wait_for(f"Step {step} of 7")
        words = " ".join(shown.split())  # the message wraps where the target's path ends
        assert "error: dracut" in words and "not installed in the target" in words  # the Review names it
        tmux.keys("C-n")
        shown = tmux.wait_for("The plan has errors")
        assert "Apply to" not in shown
    finally:
        tmux.close()
    assert tree_digest(target) == before


@pytest.mark.chroot  # the target's dracut runs under chroot
async def test_escape_during_apply_cancels_and_rolls_back(fixed):
    """A long dracut (it sleeps) is stopped by Escape; every step done is rolled back."""
    target, _ = fixed
    target_dracut(target, "echo 'dracut: working'\nexec /bin/busybox sleep 60\n")
    before = tree_digest(target)
    app = app_for(fixed, dry_run=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await start_apply(pilot)
        for _ in range(50):  # until dracut runs
            await pilot.pause(0.1)
            if "dracut: working" in "\n".join(str(x) for x in app.screen.query_one("#log").lines):
                break
        await pilot.press("escape")
        await settle(pilot)
        await pilot.pause()
        assert type(app.screen).__name__ == "ApplyScreen"  # Escape cancelled, it did not leave
        result = str(app.screen.query_one("#result").render())
        assert "failed" in result and "Rolled back" in result
    assert tree_digest(target) == before


@pytest.mark.udev
async def test_the_device_list_follows_hotplug(tmp_path, fixed):
    """A loop device attached while the Source step is open appears in its list."""
    _, facts = fixed
    make_disk_image(tmp_path / "disk.img", [Part(16, fs="ext4", label="HOTPLUG")], tmp_path)
    with udevd():
        facts.devices = []
        facts.watch = True
        app = app_for(fixed)
        async with app.run_test(size=(120, 40)) as pilot:
            await walk_to(pilot, "SourceScreen")
            await pilot.pause(1.0)  # the monitor is listening
            with loop_device(tmp_path / "disk.img") as dev:
                sh("udevadm", "settle", "--timeout=10", check=False)
                for _ in range(50):
                    await pilot.pause(0.2)
                    if any(d.path == f"{dev}p1" for d, _ in app.screen.rows):
                        break
                shown = [d for d, _ in app.screen.rows if d.path == f"{dev}p1"]
                assert shown and shown[0].label == "HOTPLUG"


@pytest.mark.slow  # packs a tree with tar and zstd
async def test_create_an_image_from_the_tui(fixed, tmp_path):
    """The Image step's "Create an image from this host" runs image create with progress,
    then offers the new archive (here a small tree stands in for the host's root)."""
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("made-by-the-tui\n")
    app = app_for(fixed, dry_run=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await walk_to(pilot, "ImageScreen")
        await pilot.click("#create")
        await pilot.pause()
        assert type(app.screen).__name__ == "CreateImageModal"
        vol = fixed[0].parent / "vol"
        assert app.screen.query_one("#output").value == str(vol / "images/rootfs.tar.zst")
        app.screen.query_one("#from").value = str(tree)
        app.screen.query_one("#output").value = str(vol / "images/new.tar.zst")
        await pilot.click("#go")
        await settle_until(pilot, lambda: app.image_info is not None and app.image_info.path.endswith("new.tar.zst"))
        assert type(app.screen).__name__ == "ImageScreen"
        assert app.plan.image == "images/new.tar.zst"
        assert "images/new.tar.zst" in [a[0] for a in app.screen.archives]
        assert app.image_info is not None and app.image_info.format == "sharded"  # the default
        assert "shards, unpacked in parallel" in str(app.screen.query_one("#info").render())
        # leaving, it does not say "nothing has been changed": it names what was written
        detail = await quit_dialog_detail(pilot)
        assert "Nothing has been changed" not in detail
        assert f"an image was written: '{vol / 'images/new.tar.zst'}'" in detail, detail
    stream = subprocess.run(
        ["zstd", "-dc", str(fixed[0].parent / "vol/images/new.tar.zst")], capture_output=True, check=True
    ).stdout
    listing = subprocess.run(["tar", "-t", "--ignore-zeros"], input=stream, capture_output=True).stdout.decode()
    assert "./etc/hostname" in listing


async def quit_dialog_detail(pilot) -> str:
    """Back to the Overview and Escape: the quit dialog's text about what was changed."""
    app = pilot.app
    while len(app.screen_stack) > 1:
        app.pop_screen()
        await pilot.pause()
    await pilot.press("escape")
    await pilot.pause()
    assert type(app.screen).__name__ == "ConfirmModal", type(app.screen).__name__
    return app.screen.detail


async def fill_create_dialog(pilot, tree: Path, output: Path, fmt: str, exclude: str = ""):
    """From the start: the Image step's create dialog, filled in and started."""
    await walk_to(pilot, "ImageScreen")
    pilot.app.screen.query_one("#create").press()
    await pilot.pause()
    dialog = pilot.app.screen
    dialog.query_one("#from").value = str(tree)
    dialog.query_one("#output").value = str(output)
    dialog.query_one("#format").value = fmt
    dialog.query_one("#exclude").value = exclude
    dialog.query_one("#go").press()
    return dialog


async def test_the_create_dialog_passes_format_and_exclusions_and_escape_stops_it(fixed, tmp_path):
    """The dialog offers what the CLI has (format, --exclude; --with-mount is passed the same
    way, not exercised: no second filesystem here); Escape while packing stops tar and the
    compressor and leaves nothing at the output."""
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("made-by-the-tui\n")
    (tree / "srv/cache").mkdir(parents=True)
    (tree / "srv/cache/big.bin").write_bytes(b"x" * 4096)
    vol = fixed[0].parent / "vol"
    # What a killed run left beside the output: removed, and said on the Image step.
    (vol / "images").mkdir(exist_ok=True)
    left = vol / "images/.new.tar.gz.0123456789ab.partial"
    left.write_bytes(b"\0" * 1024)
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    app = app_for(fixed, dry_run=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await fill_create_dialog(pilot, tree, vol / "images/new.tar.gz", "gz", exclude="/srv/cache")
        await settle_until(pilot, lambda: app.image_info is not None and app.image_info.path.endswith("new.tar.gz"))
        assert app.plan.image == "images/new.tar.gz"
        assert app.image_info is not None and app.image_info.format == "gzip"
        said = str(app.screen.query_one("#created").render())
        assert "note: removed '.new.tar.gz.0123456789ab.partial' (1.0K) beside the output" in said, said
    assert not left.exists()
    listing = sh("tar", "-tzf", vol / "images/new.tar.gz").stdout
    assert "./etc/hostname" in listing and "big.bin" not in listing

    # Slow to pack (xz of 48 MB of noise takes over ten seconds here): Escape stops it.
    (tree / "srv/cache/big.bin").write_bytes(os.urandom(48 << 20))
    app = app_for(fixed, dry_run=False)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await fill_create_dialog(pilot, tree, vol / "images/slow.tar.xz", "xz")
        await pilot.pause(1.0)
        assert dialog.running
        await pilot.press("escape")
        await settle(pilot)
        await pilot.pause()
        assert type(app.screen).__name__ == "ImageScreen"
    assert sorted(p.name for p in (vol / "images").iterdir()) == [
        "new.tar.gz",
        "new.tar.gz.pin",
        "new.tar.gz.sha256",
        "notes.txt",
        "rootfs.tar.zst",
    ]
    assert subprocess.run(["pgrep", "-f", "slow.tar.xz"], capture_output=True).returncode == 1  # nothing left running


async def test_a_dry_run_create_shows_what_it_would_pack_and_writes_nothing(fixed, tmp_path):
    """In a dry run the create dialog packs nothing: it says what it would pack (as `image
    create --dry-run` does), the output's folder and the tree are as they were, and the quit
    dialog's "nothing has been changed" is true."""
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("made-by-the-tui\n")
    vol = fixed[0].parent / "vol"
    before = (tree_digest(vol), tree_digest(tree))
    app = app_for(fixed)  # a dry run
    async with app.run_test(size=(120, 40)) as pilot:
        dialog = await fill_create_dialog(pilot, tree, vol / "images/new.tar.zst", "zst")
        await settle_until(pilot, lambda: "would pack" in str(dialog.query_one("#message").render()))
        said = str(dialog.query_one("#message").render())
        assert f"would pack {tree} into {vol / 'images/new.tar.zst'} (zst, sharded: 2 shards)" in said, said
        assert "(dry run: nothing was written)" in said
        assert not dialog.running and type(app.screen).__name__ == "CreateImageModal"
        assert await quit_dialog_detail(pilot) == "Nothing has been changed."
    assert (tree_digest(vol), tree_digest(tree)) == before
    assert not list(vol.rglob("*.partial")) and not (vol / "images/new.tar.zst").exists()


@pytest.mark.parametrize("damage", ["not-json", "link", "markup"])
async def test_damaged_state_shows_on_the_overview_instead_of_crashing(fixed, damage):
    """The target's state is not trusted: damaged, a planted link, or text that would be
    markup; the Overview says so, literally."""
    target, _ = fixed
    state = target / "etc/tmpfs-root"
    if damage == "link":
        state.symlink_to("/etc")
    else:
        state.mkdir(parents=True)
        (state / "state.json").write_text("{not json" if damage == "not-json" else '{"version": "[/][bold]x"}')
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert type(app.screen).__name__ == "OverviewScreen"
        setup = str(app.screen.query_one("#setup").render())
        assert "damaged" in setup and "state.json" in setup
        if damage == "markup":
            assert "'[/][bold]x'" in setup  # shown as written
        await pilot.click("#modify")  # loading the installed plan fails politely
        await pilot.pause()
    assert app.return_code in (None, 0)


# ------------------------------------------------------------ as a person uses it
async def test_a_dry_run_walks_on_past_a_failed_preflight_and_a_real_run_does_not(fixed):
    """No dracut in the target: a dry run still shows the whole flow; a real one stops."""
    target, _ = fixed
    (target / "usr/bin/dracut").unlink()
    for dry_run, stays in ((False, "OverviewScreen"), (True, "SourceScreen")):
        app = app_for(fixed, dry_run=dry_run)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+n")
            await pilot.pause()
            assert type(app.screen).__name__ == stays
            app.goto("review")  # what the palette's "Review and apply" does: the same rule
            await pilot.pause()
            assert (type(app.screen).__name__ == "ReviewScreen") == dry_run


async def test_escape_on_the_overview_asks_before_quitting(fixed):
    app = app_for(fixed)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "ConfirmModal"
        await pilot.press("enter")  # Cancel has the focus
        await pilot.pause()
        assert type(app.screen).__name__ == "OverviewScreen" and app.is_running


async def test_the_nfs_tab_and_back_keep_the_chosen_label_and_leave_no_hidden_error(fixed):
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        app.screen.query_one("#identifier").value = "LABEL=IMGVOL"
        await pilot.pause()
        app.screen.query_one("#tabs").active = "nfs"
        await pilot.pause()
        app.screen.query_one("#nfs-server").value = "10.0.0.1"
        app.screen.query_one("#nfs-export").value = "/srv"
        app.screen.query_one("#nfs-ip").value = "not an ip"
        await pilot.pause()
        assert app.plan.source.startswith("nfs4:") and app.plan.network == "not an ip"
        app.screen.query_one("#tabs").active = "block"
        await pilot.pause()
        assert app.plan.source == "LABEL=IMGVOL" and app.plan.network is None
        assert not [p for p in app.engine.problems("network") if p.severity == "error"]


async def test_the_http_tab_then_the_image_path_and_its_typed_sha256(fixed):
    """An image on a web server: URL on the Source step, then its path and its sha256 typed
    on the Image step (nothing to read here), and the command line the boot gets."""
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        app.screen.query_one("#tabs").active = "http"
        await pilot.pause()
        app.screen.query_one("#http-url").value = "http://10.0.0.11:8080/images"
        await pilot.pause()
        assert app.plan.source == "http://10.0.0.11:8080/images"
        assert "root=tmpfs:http://10.0.0.11:8080/images" in str(app.screen.query_one("#cmdline").render())
        await walk_to(pilot, "ImageScreen")
        assert app.screen.query_one("#sha-row").display and not app.screen.query_one("#pin").display
        assert "http://10.0.0.11:8080/images/" in str(app.screen.query_one("#where").render())
        app.screen.query_one("#image-path").value = "rootfs.tar.zst"
        await pilot.pause()
        assert [p.field for p in app.engine.problems("sha256")] == ["sha256"]  # plain http: required
        app.screen.query_one("#sha-text").value = "ab" * 32
        await pilot.pause()
        assert not app.engine.problems("sha256")
        args = app.engine.cmdline()
    assert "rd.tmpfs.imgfile=rootfs.tar.zst" in args and f"rd.tmpfs.sha256={'ab' * 32}" in args
    assert "ip=dhcp" in args and "rd.neednet=1" in args


async def test_a_whole_disk_is_no_source_and_says_so(fixed):
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+n")
        await pilot.pause()
        table = app.screen.query_one("#devices")
        table.move_cursor(row=0)  # /dev/vda, the whole disk
        await pilot.pause()
        shown = str(app.screen.query_one("#cmdline").render())
        assert "Select" not in shown and "NULL" not in shown
        # the very words `tmpfs-root devices --all` gives, on the line below the table too
        words = "no filesystem: a partition table ('dos'): its partitions hold the filesystems"
        assert no_filesystem(app.engine.facts.devices[0]) == words and words in shown
        assert words in str(app.screen.query_one("#device-detail").render())
        assert app.plan.source == ""


async def test_a_tmpfs_smaller_than_the_inspected_image_is_refused(fixed):
    app = app_for(fixed)
    async with app.run_test(size=(120, 40)) as pilot:
        await pick_image(pilot)
        await walk_to(pilot, "SizeScreen")
        size = app.screen.query_one("#size")
        size.value = "1k"
        await pilot.pause()
        assert "below the image's uncompressed size" in str(app.screen.query_one("#problem-size").render())
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert type(app.screen).__name__ == "SizeScreen"


async def test_nothing_is_called_required_before_next(fixed):
    app = app_for(fixed)
    app.engine.edit(source="nfs:10.0.0.1:/srv")
    async with app.run_test(size=(120, 40)) as pilot:
        app.goto("image")
        await pilot.pause()
        assert str(app.screen.query_one("#problem-image").render()).strip() == ""
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert "is required" in str(app.screen.query_one("#problem-image").render())


async def test_placeholders_do_not_look_like_values(fixed):
    """An empty field's hint says it is one ("e.g.", "default:", "empty", "optional") and is
    shown dim and italic, unlike anything typed."""
    from textual.widgets import Input

    app = app_for(fixed)
    checked = []
    async with app.run_test(size=(120, 40)) as pilot:
        for screen in ("SourceScreen", "ImageScreen", "SizeScreen", "BootScreen"):
            await walk_to(pilot, screen)
            if screen == "SizeScreen":
                app.screen.query_one("#size").value = ""  # prefilled; its hint shows when emptied
                await pilot.pause()
            for field in app.screen.query(Input):
                if field.placeholder and not field.value:
                    assert field.placeholder.startswith(("e.g.", "default:", "empty", "optional")), field.placeholder
                    style = field.get_component_rich_style("input--placeholder")
                    assert style.italic, field.id
                    checked.append(field.id)
            if screen == "ImageScreen":
                app.screen.query_one("#archives").focus()
                await pilot.press("enter")
                await settle(pilot)
    assert {"nfs-server", "nfs-export", "nfs-options", "nfs-ip", "size", "title", "append"} <= set(checked)


async def test_f1_explains_every_step(fixed):
    from screens.help import HELP

    app = app_for(fixed)
    async with app.run_test(size=(80, 24)) as pilot:
        for step in ("overview", "source", "image", "size", "boot", "review"):
            if step == "image":
                await pick_image(pilot)
            elif step != "overview":
                app.goto(step)
            await pilot.pause()
            await pilot.press("f1")
            await pilot.pause()
            assert type(app.screen).__name__ == "TextModal", step
            text = "\n".join(str(w.render()) for w in app.screen.query("Static"))
            assert HELP[step].split("\n")[0] in text and "Ctrl+N" in text, step
            await pilot.press("escape")
            await pilot.pause()


async def test_typed_text_is_shown_literally_never_as_markup(fixed):
    """Rich markup in a title or in kernel arguments reaches the review as typed."""
    app = app_for(fixed)
    app.engine.edit(title="Debian [testing] RAM [/]")
    async with app.run_test(size=(120, 40)) as pilot:
        await pick_image(pilot)
        app.goto("review")
        await pilot.pause()
        assert "Debian [testing] RAM [/]" in str(app.screen.query_one("#summary").render())
        app.engine.edit(append="console=ttyS0 [/bold]x")
        app.goto("review")
        await pilot.pause()
        assert "[/bold]x" in str(app.screen.query_one("#problems").render())  # refused, shown as typed


def test_the_tui_refuses_a_root_that_is_not_a_directory(tmp_path):
    result = run_cli("--root", tmp_path / "absent")
    assert result.returncode == 2 and "--root" in result.stderr and "not a directory" in result.stderr


async def test_an_installed_setup_shows_status_as_text_and_a_dry_run_remove_writes_nothing(tmp_path, monkeypatch):
    """A target with tmpfs-root applied (busybox and fake dracut/GRUB tools under chroot):
    the Overview offers Modify/Status/Remove; Status is lines to read, not JSON; Remove in a
    dry run ends with "Dry run complete", never "removed", and the target is unchanged."""
    from tests.infra import make_tool_target
    from tui.host import Host
    from tui.plan import Plan
    from tui.transaction import apply

    monkeypatch.setenv("TMPFS_ROOT_LOCK_DIR", str(tmp_path / "lock"))
    target = make_tool_target(tmp_path / "target")
    apply(Plan(source="nfs:10.0.0.11:/srv/images", image="images/rootfs.tar.zst"), Host(target))
    applied = tree_digest(target)
    app = TmpfsRootApp(str(target), dry_run=True, facts=Facts([], 8 << 30, 0, 900 << 20, watch=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.pause()
        assert [b.id for b in app.screen.query("Button")] == ["modify", "status", "remove", "quit"]
        app.screen.query_one("#status").press()
        await pilot.pause()
        shown = screen_text(app)
        assert "Status" in shown and "{" not in shown and "nfs:10.0.0.11" in shown
        await pilot.press("escape")
        await pilot.pause()
        app.screen.query_one("#remove").press()
        await pilot.pause()
        await pilot.press("tab", "enter")  # from Cancel over to Remove
        await settle(pilot)
        await pilot.pause()
        result = str(app.screen.query_one("#result").render())
        assert "Dry run complete" in result and "removed" not in result.split("What")[0]
    assert tree_digest(target) == applied


async def test_saving_the_plan_onto_a_directory_says_so_and_keeps_the_dialog(fixed, tmp_path):
    app = app_for(fixed)
    async with app.run_test(size=(80, 24)) as pilot:
        await pick_image(pilot)
        await walk_to(pilot, "ReviewScreen")
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#path").value = str(tmp_path)
        app.screen.query_one("#save").press()
        await pilot.pause()
        assert type(app.screen).__name__ == "SavePlanModal"
        assert "is a directory" in str(app.screen.query_one("#message").render())
    assert app.return_code in (None, 0)


async def test_typing_checks_the_text_only_and_next_probes_in_a_worker(fixed, monkeypatch):
    """Each keystroke validates without probes (no grub-probe, no decompressor); Next runs
    them, off the UI thread."""
    import threading

    from tui import validation

    calls: list[tuple[bool, bool]] = []  # (probes, on the UI thread)
    real = validation.validate

    def spy(plan, ctx):
        calls.append((ctx.probes, threading.current_thread() is threading.main_thread()))
        return real(plan, ctx)

    monkeypatch.setattr(validation, "validate", spy)
    app = app_for(fixed)
    async with app.run_test(size=(80, 24)) as pilot:
        await empty_size_field(pilot)
        calls.clear()
        await pilot.press(*"512M")
        await pilot.pause()
        typed = list(calls)
        calls.clear()
        await pilot.press("ctrl+n")
        await settle(pilot)
        await pilot.pause()
        assert type(app.screen).__name__ == "BootScreen"
    assert len(typed) >= 4 and all(not probes for probes, _ in typed)
    assert (True, False) in calls  # probed, in a worker thread
    assert not [c for c in calls if c == (True, True)]  # never probed on the UI thread
