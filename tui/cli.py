"""The ``tmpfs-root`` command line.

Without a command it opens the TUI.  Every command takes ``--root DIR`` (the
target system, ``/`` by default).  Bad input is reported one line per problem
on stderr with exit status 2, and nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from tui import __version__
from tui.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, BadInput, TmpfsRootError, shown

#: Bad input: one line, exit 2 (the engine's BadInput, named for the command line).
UsageError = BadInput


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, not a usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


EPILOG_PLAN = """\
examples:
  tmpfs-root plan --source LABEL=IMGVOL --image images/rootfs.tar.zst --size 2G
  tmpfs-root plan --source UUID=0a1b… --image rootfs.tar.zst --boot once --save /root/ram.toml
  tmpfs-root plan --source nfs:10.0.0.11:/srv/images,vers=3 --image rootfs.tar.zst --ip dhcp
  tmpfs-root plan --plan /root/ram.toml --json

exit status: 0 valid (warnings are printed), 2 errors (one line each on stderr).
"""


EPILOG_APPLY = """\
examples:
  tmpfs-root apply --source LABEL=IMGVOL --image images/rootfs.tar.zst --size 2G
  tmpfs-root apply --plan /root/ram.toml --yes
  tmpfs-root apply --root /mnt/target --source UUID=0a1b… --image rootfs.tar.zst --boot menu --yes

boot modes: once (default) boots the entry on the next reboot only, with rd.shell=0
rd.emergency=reboot panic=10 so a failed boot reboots into the unchanged default entry;
menu only adds the entry; default makes it the default entry (asks to confirm).

exit status: 0 applied (or nothing to change), 1 a step failed (everything was rolled back),
2 bad input (nothing written).
"""


ROOT_HELP = ("the target system: / for this one (default), or a directory holding a system, "
             "e.g. a mounted disk (--root /mnt/target); the same before or after the command")


def _add_root(p: argparse.ArgumentParser) -> None:
    # Given after the command; merged with the one before it in _merge_globals.
    p.add_argument("--root", metavar="DIR", dest="root_cmd", default=None, help=ROOT_HELP)


def _add_dry_run(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--dry-run", dest="dry_run_cmd", action="store_true", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tmpfs-root",
        description="Boot this host with its root filesystem unpacked into RAM (tmpfs): pick a "
                    "volume holding a root-filesystem archive, and tmpfs-root writes a dracut "
                    "module, builds a separate initramfs and adds a GRUB entry that boots it. "
                    "Without a command, the interactive TUI opens.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n  devices   list the block devices that can hold the image\n"
               "  plan      show (and check) what a conversion would do, writing nothing\n"
               "  apply     convert: install the module, build the initramfs, add the boot entry\n"
               "  status    what is installed, and whether it still matches what apply wrote\n"
               "  remove    undo apply: every file the tool did not create is as before\n"
               "  image     create an image from this system, or inspect one\n\n"
               "run `tmpfs-root COMMAND --help` for a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"tmpfs-root {__version__}")
    parser.add_argument("--root", metavar="DIR", dest="root_global", default=None, help=ROOT_HELP)
    parser.add_argument("--dry-run", dest="dry_run_global", action="store_true",
                        help="write nothing: the TUI walks the whole flow and shows what Apply would "
                             "do; apply, remove and image create show what they would do (the same "
                             "before or after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("devices", help="list block devices that can hold the image",
                       description="List the block devices (disks, partitions, LVM volumes, RAID, "
                                   "loop devices) with their filesystem, LABEL, UUID, PARTUUID, "
                                   "PARTLABEL, mountpoints and the identifier recommended for "
                                   "root=tmpfs:<source>.",
                       epilog="examples:\n  tmpfs-root devices\n  tmpfs-root devices --json | jq .",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_root(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--all", action="store_true",
                   help="also list devices without a filesystem (whole disks, LVM PVs, swap)")

    p = sub.add_parser("plan", help="show what a conversion would do (writes nothing)",
                       description="Check a conversion and show the kernel command line, every "
                                   "file it would write and every command it would run. Nothing "
                                   "is written (except the plan itself with --save).",
                       epilog=EPILOG_PLAN, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_root(p)
    add_plan_options(p)
    p.add_argument("--save", metavar="FILE", help="save the plan as TOML (only when it is valid), "
                                                  "e.g. --save /root/tmpfs-root.toml")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")

    p = sub.add_parser("apply", help="convert the target: module, initramfs, boot entry",
                       description="Check the plan, show it and ask, then: install the dracut module, "
                                   "build a separate initramfs per kernel (the distro's own is not "
                                   "touched), install kernel hooks (new kernels get theirs), write the "
                                   "boot entry, regenerate the GRUB configuration (checked with "
                                   "grub-script-check before it replaces the old one), set the boot "
                                   "mode, and record the state in /etc/tmpfs-root. If any step fails, "
                                   "every step before it is undone. Applying the same plan again "
                                   "changes nothing; a changed plan updates the setup in place.",
                       epilog=EPILOG_APPLY, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_root(p)
    add_plan_options(p)
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (needed when there is no terminal)")
    _add_dry_run(p, "show what apply would do and write nothing")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="print the full output of dracut and grub-mkconfig")

    p = sub.add_parser("status", help="what is installed, and is it intact",
                       description="Show the installed setup: the boot mode and entry, each kernel's "
                                   "initramfs (missing, older than its kernel, built by another module "
                                   "version), whether every file still matches what apply wrote, and "
                                   "whether a boot-once is pending. Exit status: 0 intact or not "
                                   "installed, 1 something needs attention.",
                       epilog="examples:\n  tmpfs-root status\n  tmpfs-root status --root /mnt/target --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_root(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("remove", help="undo apply",
                       description="Remove the boot entry, the kernel hooks, the tmpfs-root initramfs "
                                   "images, the dracut module and the state, clear a pending boot-once "
                                   "(and restore the previous default entry), then regenerate the GRUB "
                                   "configuration. Everything the tool did not create is as before apply.",
                       epilog="examples:\n  tmpfs-root remove\n  tmpfs-root remove --root /mnt/target --yes",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_root(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _add_dry_run(p, "show what remove would do and write nothing")
    p.add_argument("--verbose", "-v", action="store_true", help="print the full output of grub-mkconfig")

    p = sub.add_parser("image", help="create or inspect root images",
                       description="Root images: pack a root filesystem into an archive that boots "
                                   "on a tmpfs root, or inspect an archive.")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", parser_class=_Parser, required=True)
    c = isub.add_parser("create", help="pack a running or mounted root into an image",
                        description="Pack a root filesystem (/ or a mounted root) into an archive: "
                                    "numeric owners, modes, hard links, sparse files, xattrs, ACLs, "
                                    "SELinux labels and file capabilities are kept; /proc, /sys, /dev, "
                                    "/run and /tmp contents, swap files, the output and its folder are "
                                    "not packed. The image's /etc/fstab (not the host's) has its / "
                                    "entry and the images volume's entry commented out. Written under "
                                    "a temporary name, renamed at the end, with FILE.sha256 beside it.",
                        epilog="examples:\n"
                               "  tmpfs-root image create --from / --output /srv/images/rootfs.tar.zst\n"
                               "  tmpfs-root image create --from /mnt/target --output root.tar.gz --format gz "
                               "--exclude /var/cache/apt/archives/*.deb\n"
                               "  tmpfs-root image create --from / --output /srv/images/r.tar.zst --with-mount /home",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--from", dest="source", metavar="DIR", required=True,
                   help="the root to pack: / for this system, or a mounted root (e.g. /mnt/target)")
    c.add_argument("--output", metavar="FILE", required=True, help="the archive to write, e.g. "
                                                                  "/srv/images/rootfs.tar.zst")
    c.add_argument("--format", default=None, metavar="FMT",
                   help="zst (default: unpacks about 3x faster than gz at a smaller size), gz, xz, lz4, tar")
    c.add_argument("--level", type=int, default=None, metavar="N",
                   help="compression level (zst 1-19, default 3; gz 1-9, 6; xz 0-9, 6; lz4 1-12, 1)")
    c.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out what matches, repeatable; /path anchors at the root "
                        "(e.g. --exclude '/var/cache/apt/archives/*.deb')")
    c.add_argument("--with-mount", action="append", default=[], metavar="PATH",
                   help="also pack a separate filesystem mounted below the root (/usr and /var "
                        "always are), e.g. --with-mount /home")
    c.add_argument("--yes", action="store_true", help="replace FILE if it exists")
    _add_dry_run(c, "show what would be packed (folders, mounts left out, size) and write nothing")
    i = isub.add_parser("inspect", help="format, sizes, file count and recommended tmpfs size",
                        description="Read an image once (streaming, nothing written): format by magic "
                                    "bytes, compressed and uncompressed size, file count, the tmpfs size "
                                    "the boot would choose, and its sha256 with --sha256.",
                        epilog="examples:\n  tmpfs-root image inspect /srv/images/rootfs.tar.zst\n"
                               "  tmpfs-root image inspect rootfs.tar.zst --sha256 --json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("file", metavar="FILE", help="the archive to inspect")
    i.add_argument("--sha256", action="store_true", help="also compute its sha256 (for --sha256 of plan)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def add_plan_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan")
    g.add_argument("--plan", metavar="FILE", help="load a saved plan (TOML) instead of the options below")
    g.add_argument("--source", metavar="SRC",
                   help="the volume holding the image: /dev/vda1, LABEL=IMGVOL, UUID=…, PARTUUID=…, "
                        "PARTLABEL=…, /dev/mapper/vg-lv, or nfs:server:/export[,opts] / nfs4:…")
    g.add_argument("--image", metavar="PATH",
                   help="archive path relative to the source's root, e.g. images/rootfs.tar.zst")
    g.add_argument("--size", metavar="SIZE",
                   help="tmpfs size as tmpfs takes it: 2G, 1536m, 50%% (default: decided at boot "
                        "from the image's size and the RAM)")
    g.add_argument("--kernel", metavar="KVER", action="append", dest="kernels",
                   help="kernel version to build for, repeatable (default: the running kernel if "
                        "installed in the target, else the newest), e.g. --kernel 6.1.0-50-amd64")
    g.add_argument("--title", metavar="T", help="boot entry title (default: the OS name + "
                                                 "'root in RAM (tmpfs-root)')")
    g.add_argument("--boot", metavar="MODE",
                   help="once (default): boot the entry on the next reboot only, falling back to "
                        "the normal entry on failure; menu: only add the entry; default: make it "
                        "the default entry")
    g.add_argument("--append", metavar="ARGS", default=None,
                   help="extra kernel arguments, e.g. --append 'console=ttyS0 quiet'")
    g.add_argument("--ip", metavar="CONF", dest="network",
                   help="network for an NFS source (kernel ip=): dhcp (default) or "
                        "client:server:gw:netmask:host:iface:none")
    g.add_argument("--sha256", metavar="HEX", help="refuse to boot unless the image has this sha256")
    g.add_argument("--tmpfs-opts", metavar="OPTS",
                   help="extra tmpfs options, e.g. mpol=interleave,huge=within_size")
    g.add_argument("--no-hostonly", dest="hostonly", action="store_false", default=None,
                   help="build a generic initramfs (dracut -N) instead of a host-only one")


def plan_from_args(args) -> "Plan":
    from tui.plan import Plan, PlanError

    given = {k: getattr(args, k) for k in ("source", "image", "size", "kernels", "title", "boot",
                                           "append", "network", "sha256", "tmpfs_opts", "hostonly")}
    if args.plan is not None:
        from tui.safefile import SMALL_LIMIT, decode_text, read_regular

        where = f"--plan {shown(args.plan)}"
        try:
            if not args.plan:
                raise OSError(0, "is empty; accepted: the path of a plan file")
            text = decode_text(read_regular(args.plan, SMALL_LIMIT))
        except OSError as e:
            raise UsageError(f"{where}: cannot be read ({e.strerror})") from None
        try:
            plan = Plan.from_toml(text, origin=where)
        except PlanError as e:
            raise UsageError(str(e)) from None
        for key, value in given.items():  # options given beside --plan override it
            if value is not None:
                setattr(plan, key, value)
        return plan
    plan = Plan()
    for key, value in given.items():
        if value is not None:
            setattr(plan, key, value)
    return plan


def _merge_globals(args) -> None:
    """--root and --dry-run mean the same before or after the command; two different --root
    values are refused (never one silently winning)."""
    before, after = args.root_global, getattr(args, "root_cmd", None)
    if args.command == "image" and (before or after):
        raise UsageError("--root: image commands work on paths of this machine; accepted: "
                         "--from DIR for create, FILE for inspect")
    for value in (before, after):
        if value is not None and (not value or "\0" in value):
            raise UsageError(f"--root {shown(value)}: accepted: a directory holding a "
                             "system, or / for this one")
    if before and after and os.path.realpath(before) != os.path.realpath(after):
        raise UsageError(f"--root given twice, {shown(before)} before the command and "
                         f"{shown(after)} after it; accepted: one target")
    args.root = after or before or "/"
    args.dry_run = args.dry_run_global or getattr(args, "dry_run_cmd", False)


def _host(args, dry_run: bool = False):
    from tui.host import make_host

    root = args.root
    if not os.path.isdir(root):
        raise UsageError(f"--root {shown(root)}: is not a directory; accepted: a directory "
                         "holding a system, or / for this one")
    return make_host(root, dry_run=dry_run)


def _discover():
    from tui.devices import discover

    try:
        return discover(), None
    except Exception as e:  # pyudev may be unusable (no /sys in a container)
        return None, f"warning: devices: cannot list block devices ({e}); source not checked"


# ------------------------------------------------------------------ commands
def cmd_devices(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tui.devices import discover, human_size, recommended_identifier
    from tui.errors import escape

    _host(args)
    devices = discover()
    listed = devices if args.all else [d for d in devices if d.usable]
    if args.json:
        print(json.dumps([d.to_json(devices) for d in listed], indent=2))
        return EXIT_OK
    console = Console()
    table = Table(title="Block devices that can hold the image" + ("" if not args.all else " (all)"))
    for col in ("DEVICE", "TYPE", "SIZE", "FS", "LABEL", "UUID", "PARTLABEL", "MOUNTED", "MODEL",
                "USE AS SOURCE"):
        table.add_column(col, overflow="fold")
    for d in listed:
        extra = " ".join(d.extra_args())
        cells = [d.path, d.type, human_size(d.size), d.fstype or "", d.label or "", d.uuid or "",
                 d.partlabel or "", ", ".join(d.mountpoints), d.model or "",
                 (recommended_identifier(d, devices) + (f" {extra}" if extra else "")) if d.usable else ""]
        # labels, models and mountpoints come from the devices: shown literally, never as markup
        table.add_row(*(Text(escape(c)) for c in cells))
    if not listed:
        console.print("No block device with a filesystem found (use --all to list every device).")
        return EXIT_OK
    console.print(table)
    return EXIT_OK


def _validate(plan, host, devices, warning: str | None) -> list:
    """Every problem of *plan* on *host*, printed one line each on stderr (with the
    device-listing warning, if any)."""
    from tui.validation import Context, validate

    problems = validate(plan, Context(host=host, devices=devices))
    for line in [p.line() for p in problems] + ([warning] if warning else []):
        say(line)
    return problems


def cmd_plan(args) -> int:
    from tui.transaction import record
    from tui.validation import errors

    from tui.plan import check_save_path, save_plan

    if args.save is not None:
        check_save_path(args.save)
    plan = plan_from_args(args)
    host = _host(args, dry_run=True)
    devices, warning = _discover()
    problems = _validate(plan, host, devices, warning)
    if errors(problems):
        if args.json:
            print(json.dumps({"valid": False, "problems": [p.to_json() for p in problems]}, indent=2))
        return EXIT_USAGE
    resolved = record(plan, host, devices)
    if args.save is not None:
        save_plan(args.save, plan)
    if args.json:
        print(json.dumps({
            "valid": True,
            "cmdline": " ".join(resolved.cmdline),
            "kernels": resolved.kernels,
            "title": resolved.title,
            "initrds": resolved.initrds,
            "files": [a.to_json() for a in host.written_files()],
            "commands": [a.argv for a in host.commands()],
            "problems": [p.to_json() for p in problems],
            "plan": plan.to_json(),
        }, indent=2))
        return EXIT_OK
    _print_plan(resolved, host)
    return EXIT_OK


def _print_plan(resolved, host) -> None:
    from rich.console import Console
    from rich.text import Text

    from tui.errors import escape

    console = Console(soft_wrap=True, highlight=False)
    console.print("[bold]Kernel command line[/bold] (added to each entry):")
    console.print("  " + " ".join(resolved.cmdline), markup=False)
    console.print(Text.assemble(("Kernels", "bold"), f": {', '.join(resolved.kernels)}"))
    console.print(Text.assemble(("Entry title", "bold"), f": {escape(resolved.title)}"))
    _print_actions(host, console)


def _print_actions(host, console=None) -> None:
    """The files a recording host "wrote" and the commands it "ran"."""
    from rich.console import Console
    from rich.text import Text

    from tui.errors import escape

    console = console or Console(soft_wrap=True, highlight=False)
    console.print(Text.assemble(("Files it would write", "bold"), f" (under {escape(str(host.root))}):"))
    for action in host.written_files():
        console.print(f"  {action.kind:6} {action.path}", markup=False, highlight=False)
    console.print(Text.assemble(("Commands it would run", "bold"),
                                ("" if host.is_live else f" (chroot {escape(str(host.root))})") + ":"))
    for action in host.commands():
        console.print("  " + escape(action.describe()), markup=False, highlight=False)


def cmd_tui(args) -> int:
    try:
        from tui.app import run_app
    except ImportError:
        print("tmpfs-root: the interactive TUI is not built yet; use the commands instead "
              "(tmpfs-root --help)", file=sys.stderr)
        return EXIT_FAILED
    return run_app(root=args.root, dry_run=args.dry_run)


def _progress_bar(console, label: str, unit_files: bool):
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = [TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    if unit_files:
        columns.append(TextColumn("{task.fields[files]}"))
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def cmd_image(args) -> int:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if args.image_command == "inspect":
        return _image_inspect(args, console)
    return _image_create(args, console)


def _image_inspect(args, console) -> int:
    from tui.devices import human_size
    from tui.errors import escape
    from tui.images import ImageError, inspect
    from tui.validation import mem_total

    try:
        with _progress_bar(console, "reading", False) as bar:
            task = bar.add_task("read", total=None)
            info = inspect(args.file, with_sha256=args.sha256, ram=mem_total(),
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    except ImageError as e:
        raise
    for warning in info.warnings:
        say(f"warning: FILE {warning}")
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return EXIT_OK
    print(f"{escape(info.path)}: {info.format} archive")
    print(f"  compressed    {human_size(info.compressed)} ({info.compressed} bytes)")
    print(f"  uncompressed  {human_size(info.uncompressed)} ({info.uncompressed} bytes, "
          f"{info.compressed / max(info.uncompressed, 1):.0%} packed)")
    print(f"  files         {info.files}")
    print(f"  tmpfs size    {info.recommended_size} recommended (--size; image + half again, "
          "at least 256M more, at most 90% of RAM)")
    if info.sha256:
        print(f"  sha256        {info.sha256}")
    return EXIT_OK


def _image_create(args, console) -> int:
    from tui.devices import human_size
    from tui.errors import escape
    from tui.image_create import DEFAULT_FORMAT, create, make_plan, scan

    fmt = args.format or DEFAULT_FORMAT
    plan = make_plan(args.source, args.output, fmt, args.level, args.exclude, args.with_mount)
    if plan.output.exists() and not args.yes and not args.dry_run:
        raise UsageError(f"--output {shown(args.output)}: exists; pass --yes to replace it")
    for m in plan.skipped_mounts:
        say(f"note: /{escape(m)} is a separate filesystem and is not packed (add --with-mount /{escape(m)})")
    for folder in plan.left_out:
        say(f"note: {escape(folder)} is not packed: the output is written there")
    if args.dry_run:
        total_bytes, total_files = scan(plan)
        print(f"would pack {escape(str(plan.source))} into {escape(str(plan.output))} ({fmt}): "
              f"{total_files} entries, {human_size(total_bytes)} before compression")
        print(f"  separate filesystems packed: {', '.join('/' + m for m in plan.mounts) or 'none'}")
        print("(dry run: nothing was written)")
        return EXIT_OK
    with _progress_bar(console, "packing", True) as bar:
        task = bar.add_task("pack", total=None, files="")

        def show(done, total, files, files_total):
            bar.update(task, completed=done, total=total, files=f"{files}/{files_total} files")

        made = create(plan, progress=show)
    for w in made.warnings[:20]:
        say(f"warning: tar: {escape(w)}")
    print(f"{escape(made.path)}: {human_size(made.size)}, {made.files} files, sha256 {made.sha256} "
          f"(in {escape(made.path)}.sha256)")
    return EXIT_OK


# ------------------------------------------------------------ apply / remove
class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the transaction rolls back."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    def handler(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _confirm(question: str, yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: no terminal to ask for confirmation on; pass --yes")
    answer = input(f"{one_line(question)} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError(f"{what}: not confirmed; nothing was changed")


class StepPrinter:
    """Steps as lines ([2/7] build the initramfs … ok, 38.2 s), with the command's latest
    output line as a live status on a terminal, or every line with --verbose."""

    def __init__(self, console, verbose: bool):
        import time

        self.console, self.verbose, self.clock = console, verbose, time.monotonic
        self.started = 0.0
        self.status = None

    def on_step(self, i: int, total: int, name: str, event: str, note: str) -> None:
        if event == "start":
            self.started = self.clock()
            self.console.print(f"[{i + 1}/{total}] {name} …", markup=False, highlight=False)
            if self.console.is_terminal and not self.verbose:
                self.status = self.console.status(name)
                self.status.start()
            return
        if self.status:
            self.status.stop()
            self.status = None
        took = self.clock() - self.started
        if event == "done":
            self.console.print(f"      {note or 'done'} ({took:.1f} s)", markup=False, highlight=False)
        else:
            self.console.print(f"      FAILED after {took:.1f} s", markup=False, highlight=False)

    def on_line(self, line: str) -> None:
        line = one_line(line)
        if self.verbose:
            self.console.print(f"      | {line}", markup=False, highlight=False)
        elif self.status:
            from rich.text import Text

            self.status.update(Text(line[-100:]))


def _report_failure(console, e) -> None:
    for line in e.tail[-15:]:
        console.print(f"      | {one_line(line.rstrip())}", markup=False, highlight=False)


def cmd_apply(args) -> int:
    from rich.console import Console

    from tui.host import make_host
    from tui.plan import version_key
    from tui.transaction import TransactionError, apply, record
    from tui.validation import errors

    plan = plan_from_args(args)
    host = _host(args)
    devices, warning = _discover()
    problems = _validate(plan, host, devices, warning)
    if errors(problems):
        return EXIT_USAGE
    preview = make_host(host.root, dry_run=True)
    interrupted = bool(preview.pending_journal())
    if interrupted:
        say("note: an earlier apply or remove was interrupted; its changes are rolled back first")
    resolved = record(plan, preview, devices)
    if not preview.actions and not interrupted:
        print(f"tmpfs-root: already applied to {one_line(str(host.root))}; nothing to change")
        return EXIT_OK
    _print_plan(resolved, preview)
    if args.dry_run:
        print("(dry run: nothing was written)")
        return EXIT_OK
    _confirm(f"Apply these changes to {host.root}?", args.yes, "apply")
    if plan.boot == "default":
        _confirm("--boot default: every reboot will boot this entry (root in RAM) until you change "
                 "it or run 'tmpfs-root remove'. Make it the default?", args.yes, "--boot default")
    console = Console(stderr=True, highlight=False)
    printer = StepPrinter(console, args.verbose)
    try:
        with _terminate_as_interrupt():
            outcome = apply(plan, host, devices, on_line=printer.on_line, on_step=printer.on_step)
    except TransactionError as e:
        _report_failure(console, e)
        raise
    except KeyboardInterrupt:
        say("interrupted; every step done so far was rolled back")
        return EXIT_INTERRUPTED
    if outcome.recovered:
        print(f"tmpfs-root: rolled back {len(outcome.recovered)} change(s) left by an interrupted run")
    kver = max(resolved.kernels, key=version_key)
    print(one_line(f"Applied to {host.root}: entry 'tmpfs-root-{kver}' ({resolved.title})."))
    print(next_steps(plan.boot))
    return EXIT_OK


def next_steps(boot: str) -> str:
    """What to do after a successful apply (the TUI shows the same words)."""
    first = {"once": "Next: reboot (systemctl reboot) to boot it once; if it fails, the machine "
                     "reboots into its normal entry.",
             "default": "Next: reboot (systemctl reboot); it boots from RAM until you run "
                        "'tmpfs-root remove'.",
             "menu": "Next: reboot and choose the entry in the GRUB menu."}[boot]
    return (f"{first}\nCheck after the boot: findmnt / shows tmpfs. Check the setup: tmpfs-root "
            "status. Undo: tmpfs-root remove.")


def cmd_status(args) -> int:
    from tui.transaction import status

    host = _host(args)
    report = status(host)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_FAILED if report["problems"] else EXIT_OK
    for line in status_lines(report, str(host.root)):
        print(one_line(line))
    for problem in report["problems"]:
        say(f"attention: {problem}")
    return EXIT_FAILED if report["problems"] else EXIT_OK


def status_lines(report: dict, root: str) -> list[str]:
    """The status report as lines of text (the TUI shows the same lines)."""
    bl = report["bootloader"]
    if report["damaged"]:
        return [f"tmpfs-root's records in {root} are damaged: {', '.join(report['damaged'])} "
                "(see below)"]
    if not report["installed"]:
        return [f"tmpfs-root is not installed in {root}."]
    lines = [f"tmpfs-root is installed in {root}: boot mode {report['boot']}, entry "
             f"'{report['entry']}', {bl['style']} ({bl['config']})",
             f"  command line  {report['cmdline']}"]
    for k in report["kernels"]:
        marks = [m for m, on in (("initramfs missing", k["initrd"] is None),
                                 ("no entry", not k["entry"]),
                                 ("older than its kernel", k["older_than_kernel"]),
                                 ("built by another module version", k["module_changed"])) if on]
        lines.append(f"  kernel        {k['kver']}: {', '.join(marks) if marks else 'ok'}")
    changed = [f for f in report["files"] if f["state"] != "ok"]
    lines.append(f"  files         {len(report['files']) - len(changed)} of {len(report['files'])} "
                 "as apply wrote them")
    lines.append("  boot-once     " + ("pending: the next reboot boots it" if report["boot_once_pending"]
                                      else "not pending"))
    if report["default_is_ours"]:
        lines.append("  default       tmpfs-root's entry is the default")
    return lines


def cmd_remove(args) -> int:
    from rich.console import Console

    from tui.host import make_host
    from tui.transaction import TransactionError, is_installed, remove, remove_steps

    host = _host(args)
    if not is_installed(host) and not host.pending_journal():
        print(one_line(f"tmpfs-root is not installed in {host.root}; nothing to remove"))
        return EXIT_OK
    if args.dry_run:
        preview = make_host(host.root, dry_run=True)
        for step in remove_steps(preview):
            step.action()
        _print_actions(preview)
        print("(dry run: nothing was written)")
        return EXIT_OK
    _confirm(f"Remove tmpfs-root (entry, hooks, module, initramfs images, state) from {host.root}?",
             args.yes, "remove")
    console = Console(stderr=True, highlight=False)
    printer = StepPrinter(console, args.verbose)
    try:
        with _terminate_as_interrupt():
            remove(host, on_line=printer.on_line, on_step=printer.on_step)
    except TransactionError as e:
        _report_failure(console, e)
        raise
    except KeyboardInterrupt:
        say("interrupted; the removal was rolled back")
        return EXIT_INTERRUPTED
    print(one_line(f"Removed tmpfs-root from {host.root}."))
    return EXIT_OK


COMMANDS = {"devices": cmd_devices, "plan": cmd_plan, "apply": cmd_apply, "status": cmd_status,
            "remove": cmd_remove, "image": cmd_image, None: cmd_tui}


def say(line: str) -> None:
    """One line on stderr, prefixed, with anything a terminal would interpret escaped."""
    print(f"tmpfs-root: {one_line(line)}", file=sys.stderr)


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                   for c in text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _merge_globals(args)
        return COMMANDS[args.command](args)
    except TmpfsRootError as e:
        say(f"error: {e}")
        return e.exit_status
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # never a traceback for the admin, unless asked
        if os.environ.get("TMPFS_ROOT_DEBUG"):
            raise
        say(f"internal error: {type(e).__name__}: {e} (set TMPFS_ROOT_DEBUG=1 for a traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
