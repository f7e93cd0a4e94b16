"""The engine's one façade: what the command line and the TUI both use.

An :class:`Engine` holds one target (a :class:`~tui.host.Host`, or the recording
one for a dry run), the facts about this machine (gathered once), one
:class:`~tui.plan.Plan` edited through it, and everything done with them:
validation (cheap field checks, or with probes of the image and the bootloader),
the preflight checks, a preview of apply (the very steps, recorded), images (find,
inspect, create), apply and remove with progress events and one way to cancel, a log
of each, and the status as data and as lines. The CLI and the screens only present
what it returns; neither reaches into the modules behind it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tui import images, validation
from tui import plan as plan_mod
from tui.cancel import CancelToken
from tui.devices import BlockDevice, human_size, no_filesystem
from tui.errors import BadInput, Cancelled, TmpfsRootError, escape, shown
from tui.host import Action, Host, make_host
from tui.images import ImageInfo
from tui.plan import Plan, Resolved
from tui.plan_fields import plan_field
from tui.validation import Problem

if TYPE_CHECKING:
    from tui import transaction
    from tui.bootloader import Bootloader

# The bootloader, transaction and log modules are imported where they are used:
# the TUI's first screen must not wait for them (bench/startup.py).

__all__ = [
    "BlockDevice",
    "Cancelled",
    "Check",
    "Engine",
    "Event",
    "Facts",
    "ImageInfo",
    "Plan",
    "Preview",
    "Problem",
    "TmpfsRootError",
    "escape",
    "gather_facts",
    "human_size",
    "no_filesystem",
    "plan_field",
    "shown",
]


# -------------------------------------------------------------------- facts
@dataclass
class Facts:
    """What the engine knows about this machine. Gathered from the system; tests may pass
    fixed ones so that what they show does not depend on the machine they run on."""

    devices: list[BlockDevice] | None
    ram: int
    euid: int
    boot_free: int | None
    watch: bool = True  # follow hotplug (the TUI's device list)
    notes: list[str] = field(default_factory=list)  # what could not be gathered, in words


def discover_devices() -> tuple[list[BlockDevice] | None, str | None]:
    """The block devices, or None and why not (pyudev unusable: no /sys in a container)."""
    from tui.devices import discover

    try:
        return discover(), None
    except Exception as e:
        return None, f"cannot list block devices ({escape(str(e))}); source not checked"


def stale_notes(devices: list[BlockDevice] | None) -> list[str]:
    """Which devices' identifiers came from blkid because udev's database disagreed."""
    stale = [d.path for d in devices or [] if "stale" in d.origin]
    if not stale:
        return []
    return [
        f"udev's database disagrees with the disk for {', '.join(stale)} (no udevd runs): "
        "the identifiers blkid reads on the disk are used"
    ]


def gather_facts(host: Host) -> Facts:
    devices, note = discover_devices()
    try:
        st = os.statvfs(host.path("/boot"))
        boot_free: int | None = st.f_bavail * st.f_frsize
    except OSError:
        boot_free = None
    notes = ([note] if note else []) + stale_notes(devices)
    return Facts(devices, validation.mem_total(), os.geteuid(), boot_free, notes=notes)


@dataclass
class Check:
    """A preflight check: pass, warn or fail, with what it found."""

    name: str
    result: str
    detail: str


@dataclass
class Preview:
    """What apply (or remove) would do, from its own steps run on a recording host."""

    resolved: Resolved | None
    root: Path
    is_live: bool
    files: list[Action]
    commands: list[Action]


@dataclass
class Event:
    """Progress of a transaction: a step starting, done or failed, or a line a command printed."""

    kind: str  # "step" or "line"
    text: str  # the step's name, or the line
    index: int = 0
    total: int = 0
    state: str = ""  # start, done, failed
    note: str = ""


EventCallback = Callable[[Event], None]


# ------------------------------------------------------------------- engine
class Engine:
    def __init__(
        self,
        root: str | os.PathLike = "/",
        *,
        dry_run: bool = False,
        facts: Facts | None = None,
        plan: Plan | None = None,
    ):
        self.dry_run = dry_run
        self.host = make_host(root, dry_run=dry_run)
        self.root = self.host.root
        #: What this engine has written so far, a line each (shown literally): what a front end says
        #: when it is left ("nothing has been changed" only when this is empty).
        self.changes: list[str] = []
        self._facts = facts
        self.plan = plan or Plan()
        self._bootloader: Bootloader | None = None
        self._image: tuple[tuple[str, str], ImageInfo] | None = None
        self.cancel_token = CancelToken()
        self.log_error: str | None = None
        self.log_note: str | None = None  # where the log went, when that is not the target's own

    # -------------------------------------------------------------- facts
    @property
    def facts(self) -> Facts:
        if self._facts is None:
            self._facts = gather_facts(self.host)
        return self._facts

    def rediscover(self) -> None:
        """Devices again (hotplug); the rest of the facts stay, and so do the devices when
        they cannot be listed now."""
        devices, _ = discover_devices()
        if devices is not None:
            self.facts.devices = devices

    @property
    def bootloader(self) -> Bootloader:
        from tui import bootloader

        if self._bootloader is None:
            self._bootloader = bootloader.detect(self.host)
        return self._bootloader

    @property
    def is_live(self) -> bool:
        return self.host.is_live

    def target_kernels(self) -> list[str]:
        return plan_mod.target_kernels(self.host)

    def default_kernels(self) -> list[str]:
        return plan_mod.default_kernels(self.host)

    def default_title(self) -> str:
        return f"{plan_mod.os_pretty_name(self.host)}, root in RAM (tmpfs-root)"

    # --------------------------------------------------------------- plan
    def edit(self, **changes) -> None:
        """Change fields of the plan (what the image facts depend on is checked when read)."""
        for key, value in changes.items():
            if not hasattr(self.plan, key):
                raise AttributeError(key)
            setattr(self.plan, key, value)

    def source(self):
        """The plan's parsed source, or None when it does not parse."""
        return plan_mod.source_device(self.plan, self.facts.devices)[0]

    def source_device(self) -> BlockDevice | None:
        """The one block device the plan's source names here, if exactly one."""
        return plan_mod.source_device(self.plan, self.facts.devices)[1]

    def cmdline(self) -> list[str]:
        return plan_mod.kernel_cmdline(self.plan, self.facts.devices)

    def size_bytes(self, text: str | None) -> int | None:
        """Bytes of a tmpfs size as the plan gives it (N, N[kmgtpe], N%), None when it is none."""
        if not text:
            return None
        try:
            return validation.parse_size(text, self.facts.ram)
        except ValueError:
            return None

    def source_args(self) -> list[str]:
        """The part of the command line the source decides (root=, rd.lvm, ip=, …)."""
        return [a for a in self.cmdline() if a.startswith(("root=", "rd.lvm", "rd.md", "ip=", "rd.neednet"))]

    def device_tree(self) -> list[tuple[BlockDevice, int]]:
        from tui.devices import device_tree

        return device_tree(self.facts.devices or [])

    def identifiers(self, device: BlockDevice) -> list[tuple[str, str]]:
        """(label, identifier) for each way to name *device*, the recommended one first."""
        from tui.devices import identifier_choices

        return identifier_choices(device, self.facts.devices or [])

    def load_plan(self, path: str) -> None:
        """Replace the plan by a saved one (BadInput naming the file when it cannot be)."""
        from tui.safefile import SMALL_LIMIT, decode_text, read_regular

        where = f"--plan {shown(path)}"
        try:
            if not path:
                raise OSError(0, "is empty; accepted: the path of a plan file")
            text = decode_text(read_regular(path, SMALL_LIMIT))
        except OSError as e:
            raise BadInput(f"{where}: cannot be read ({e.strerror})") from None
        self.plan = Plan.from_toml(text, origin=where)

    def load_installed_plan(self) -> None:
        """The plan apply recorded in the target (/etc/tmpfs-root/plan.toml)."""
        from tui import transaction
        from tui.safefile import SMALL_LIMIT

        try:
            text = self.host.read_utf8(transaction.PLAN_FILE, SMALL_LIMIT)
        except OSError as e:
            raise BadInput(f"{transaction.PLAN_FILE}: cannot be read ({e.strerror})") from None
        self.plan = Plan.from_toml(text, origin=transaction.PLAN_FILE)

    def save_plan(self, path: str) -> None:
        plan_mod.save_plan(path, self.plan)

    # --------------------------------------------------------- validation
    def problems(self, *fields: str, probes: bool = True) -> list[Problem]:
        """The plan's problems (for *fields*, or all); without *probes*, only what the plan's
        own text and the facts decide (fast enough for every keystroke)."""
        ctx = validation.Context(
            image_size=self.image_info.uncompressed if self.image_info else None,
            host=self.host,
            devices=self.facts.devices,
            ram=self.facts.ram,
            euid=self.facts.euid,
            bootloader=self.bootloader,
            probes=probes,
        )
        found = validation.validate(self.plan, ctx)
        if fields:
            found = [p for p in found if p.field in fields]
        return found

    def preflight(self) -> list[Check]:
        """What must hold before anything can be converted, pass/warn/fail each; the target's
        checks are validation's own (the same words as the CLI's)."""
        target = {p.field: p for p in self.problems("root", "user", "dracut", "bootloader", probes=False)}
        checks = []
        if "root" in target:
            return [Check("target", "fail", target["root"].message)]
        if self.is_live:
            checks.append(
                Check(
                    "root",
                    "fail" if "user" in target else "pass",
                    target["user"].message if "user" in target else "running as root",
                )
            )
        else:
            checks.append(Check("target", "pass", f"preparing the system in {self.root}"))
        dracut = self.host.which("dracut")
        checks.append(
            Check(
                "dracut",
                "fail" if "dracut" in target else "pass",
                target["dracut"].message if "dracut" in target else f"{dracut} in the target",
            )
        )
        bl = self.bootloader
        checks.append(Check("bootloader", "fail" if "bootloader" in target else "pass", bl.describe()))
        kernels = self.target_kernels()
        checks.append(
            Check(
                "kernels",
                "pass" if kernels else "fail",
                f"{', '.join(kernels)} (default {self.default_kernels()[0]})"
                if kernels
                else "no kernel with modules in the target's /lib/modules",
            )
        )
        facts = self.facts
        checks.append(
            Check(
                "RAM",
                "pass" if facts.ram >= 1 << 30 else "warn",
                f"{human_size(facts.ram)}: the tmpfs root lives in it",
            )
        )
        if facts.boot_free is None:
            checks.append(Check("free space in /boot", "warn", "cannot tell"))
        else:
            checks.append(
                Check(
                    "free space in /boot",
                    "pass" if facts.boot_free >= 200 << 20 else "warn",
                    f"{human_size(facts.boot_free)} free; each initramfs takes 20-60 MB",
                )
            )
        if facts.devices is None:
            checks.append(Check("block devices", "warn", "; ".join(facts.notes) or "not listed"))
        return checks

    # ------------------------------------------------------------- images
    @property
    def image_info(self) -> ImageInfo | None:
        """What is known of the plan's image (after inspect_image), while source and image stay."""
        if self._image and self._image[0] == (self.plan.source, self.plan.image):
            return self._image[1]
        return None

    def find_archives(self) -> tuple[list[tuple[str, str, int]], str]:
        """The archives on the source volume, and how it was looked at."""
        from tui.devices import mounted_readonly

        device = self.source_device()
        if device is None:
            raise BadInput("--source: not a block device present here; type the image's path")
        with mounted_readonly(device) as top:
            found = images.find_archives(top)
        how = f"mounted at {device.mountpoints[0]}" if device.mountpoints else "mounted read-only for a look"
        return found, how

    def inspect_image(self, with_sha256: bool = False, progress: Callable[[int, int], None] | None = None) -> ImageInfo:
        """Read the plan's image on its source (mounted read-only if need be); cancel stops it."""
        from tui.devices import mounted_readonly

        device = self.source_device()
        if device is None or not self.plan.image:
            raise BadInput("--image: pick a block device source and an image first")
        key = (self.plan.source, self.plan.image)

        def reading(done: int, total: int) -> None:
            self.cancel_token.check("reading the image")
            if progress:
                progress(done, total)

        with mounted_readonly(device) as top:
            info = images.inspect(
                os.path.join(top, self.plan.image), with_sha256=with_sha256, ram=self.facts.ram, progress=reading
            )
        self._image = (key, info)
        return info

    def plan_image(
        self,
        source: str,
        output: str,
        fmt: str | None = None,
        level: int | None = None,
        excludes: list[str] | None = None,
        with_mounts: list[str] | None = None,
        shards: int | str | None = "auto",
    ):
        """What image create would pack (BadInput naming the option at fault)."""
        from tui import image_create

        return image_create.make_plan(
            source,
            output,
            fmt or image_create.DEFAULT_FORMAT,
            level,
            excludes or [],
            with_mounts or [],
            shards=shards,
        )

    def image_size(self, image_plan) -> tuple[int, int]:
        """Bytes and entries *image_plan* would pack."""
        from tui import image_create

        return image_create.scan(image_plan)

    def create_image(self, image_plan, progress=None):
        """Pack *image_plan*; cancel stops tar and the compressor and leaves nothing behind.
        Refused in a dry run (image_dry_run says what it would pack)."""
        from tui import image_create

        if self.dry_run:
            raise BadInput("a dry run packs no image; image_dry_run says what would be packed")
        self.cancel_token = CancelToken()
        made = image_create.create(image_plan, progress=progress, cancel=self.cancel_token)
        self.changes.append(f"an image was written: {shown(made.path)}")
        return made

    def image_dry_run(self, image_plan) -> list[str]:
        """What packing *image_plan* would do, as lines to show (the CLI's `image create
        --dry-run`, the TUI's dialog in a dry run); walks the tree, writes nothing."""
        from tui.devices import human_size

        total_bytes, total_files = self.image_size(image_plan)
        layout = image_plan.format
        if image_plan.sharded():
            from tui.image_shards import auto_shards

            layout = f"zst, sharded: {image_plan.shards or auto_shards(total_bytes)} shards"
        lines = [
            f"would pack {escape(str(image_plan.source))} into {escape(str(image_plan.output))} ({layout}): "
            f"{total_files} entries, {human_size(total_bytes)} before compression",
            f"  separate filesystems packed: {', '.join('/' + m for m in image_plan.mounts) or 'none'}",
            f"  mode of the image, its .sha256 and .pin: {image_plan.mode:04o}",
        ]
        if image_plan.generic:
            left_out = ", ".join(escape(p) for p in image_plan.per_host) or "none found"
            lines.append(f"  per-host files (--generic): /etc/machine-id packed empty; left out: {left_out}")
        return lines + ["(dry run: nothing was written)"]

    # -------------------------------------------------------- transactions
    def preview(self, mode: str = "apply") -> Preview:
        """What apply (or remove) would do: its steps run on a recording host."""
        from tui import transaction

        recorder = make_host(self.root, dry_run=True)
        resolved = None
        if mode == "apply":
            resolved = transaction.record(self.plan, recorder, self.facts.devices)
        else:
            for step in transaction.remove_steps(recorder):
                step.action()
        return Preview(resolved, recorder.root, recorder.is_live, recorder.written_files(), recorder.commands())

    def step_names(self, mode: str = "apply") -> list[str]:
        from tui import transaction

        recorder = make_host(self.root, dry_run=True)
        if mode == "apply":
            return [s.name for s in transaction.apply_steps(self.plan, recorder, self.facts.devices)[1]]
        return [s.name for s in transaction.remove_steps(recorder)]

    def interrupted(self) -> bool:
        """An earlier apply or remove was killed: the next one rolls it back first."""
        return bool(self.host.pending_journal())

    def apply(self, on_event: EventCallback | None = None) -> transaction.Outcome:
        return self._run("apply", on_event)

    def remove(self, on_event: EventCallback | None = None) -> transaction.Outcome:
        return self._run("remove", on_event)

    def _run(self, mode: str, on_event: EventCallback | None) -> transaction.Outcome:
        from tui import transaction
        from tui.txlog import TransactionLog

        self.cancel_token = CancelToken()
        log = None if self.dry_run else TransactionLog(f"tmpfs-root {mode}", self.root)
        if log and mode == "apply":
            for line in self.plan.to_toml().splitlines()[1:]:
                log.line(f"plan: {line}")

        def on_step(index: int, total: int, name: str, state: str, note: str) -> None:
            if log:
                log.step(index, total, name, state, note)
            if on_event:
                on_event(Event("step", name, index, total, state, note))

        def on_line(line: str) -> None:
            if log:
                log.output(line)
            if on_event:
                on_event(Event("line", line))

        try:
            if mode == "apply":
                outcome = transaction.apply(
                    self.plan, self.host, self.facts.devices, on_line=on_line, on_step=on_step, cancel=self.cancel_token
                )
            else:
                outcome = transaction.remove(self.host, on_line=on_line, on_step=on_step, cancel=self.cancel_token)
            if log:
                log.line(f"=== done: {'changed' if outcome.changed else 'nothing to change'}")
            if outcome.changed and not self.dry_run:
                done = "applied to" if mode == "apply" else "removed from"
                self.changes.append(f"tmpfs-root was {done} {shown(str(self.root))}")
            return outcome
        except BaseException as e:
            if log:
                log.line(f"=== failed: {e}" if str(e) else f"=== stopped: {type(e).__name__}")
            raise
        finally:
            if log:
                self.log_error = log.error
                if log.error is None and not self.host.is_live:
                    # Kept on this machine so that remove leaves the target as it was: say where.
                    where, root = escape(str(log.path)), escape(str(self.root))
                    self.log_note = f"the log of this run is {where} on this machine, not in {root}"
                log.close()

    def cancel(self) -> None:
        """Stop the running apply, remove or image work: rolled back, nothing left half-done."""
        self.cancel_token.cancel()

    # ------------------------------------------------------------- status
    def is_installed(self) -> bool:
        from tui import transaction

        return transaction.is_installed(self.host)

    def status(self) -> dict:
        from tui import transaction

        return transaction.status(self.host)

    def status_lines(self, report: dict | None = None) -> list[str]:
        """The status report as lines of text (the CLI prints them, the TUI shows them)."""
        report = report or self.status()
        bl, root = report["bootloader"], self.root
        if report["damaged"]:
            return [f"tmpfs-root's records in {root} are damaged: {', '.join(report['damaged'])}"]
        if not report["installed"]:
            return [f"tmpfs-root is not installed in {root}."]
        lines = [
            f"tmpfs-root is installed in {root}: boot mode {report['boot']}, entry "
            f"'{report['entry']}', {bl['style']} ({bl['config']})",
            f"  command line  {report['cmdline']}",
        ]
        for k in report["kernels"]:
            marks = [
                m
                for m, on in (
                    ("initramfs missing", k["initrd"] is None),
                    ("no entry", not k["entry"]),
                    ("older than its kernel", k["older_than_kernel"]),
                    ("built by another module version", k["module_changed"]),
                )
                if on
            ]
            lines.append(f"  kernel        {k['kver']}: {', '.join(marks) if marks else 'ok'}")
        changed = [f for f in report["files"] if f["state"] != "ok"]
        lines.append(
            f"  files         {len(report['files']) - len(changed)} of {len(report['files'])} as apply wrote them"
        )
        lines.append(
            "  boot-once     " + ("pending: the next reboot boots it" if report["boot_once_pending"] else "not pending")
        )
        if report["default_is_ours"]:
            lines.append("  default       tmpfs-root's entry is the default")
        return lines

    def command(self, *words: str) -> str:
        """``tmpfs-root WORDS…`` as the user types it for this target (``--root DIR`` when it
        is not /): every hint the CLI and the screens show is made by it (tui/hints.py)."""
        from tui.hints import command

        return command(self.root, *words)

    def next_steps(self) -> str:
        """What to do after a successful apply (every command for this engine's target)."""
        remove = self.command("remove")
        # --root: the target is not this machine; it is the system in DIR that boots next
        boot = "reboot (systemctl reboot)" if self.is_live else f"boot the system in {escape(str(self.root))}"
        first = {
            "once": f"Next: {boot} to boot it once; if it fails, the machine reboots into its normal entry.",
            "default": f"Next: {boot}; it boots from RAM until you run `{remove}`.",
            "menu": f"Next: {boot} and choose the entry in the GRUB menu.",
        }[self.plan.boot]
        return (
            f"{first}\nCheck after the boot: findmnt / shows tmpfs. Check the setup: "
            f"{self.command('status')}. Undo: {remove}."
        )
