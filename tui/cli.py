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

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, not a usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"error: {message} (see {self.prog} --help)")


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


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", metavar="DIR", default="/",
                   help="the target system: / for this one (default), or a directory holding a "
                        "system, e.g. a mounted disk (--root /mnt/target)")


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
    _add_root(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="TUI: go through the whole flow, but only show what Apply would do")
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
    p.add_argument("--dry-run", action="store_true", help="show what apply would do and write nothing")
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
    _add_root(c)
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
    i = isub.add_parser("inspect", help="format, sizes, file count and recommended tmpfs size",
                        description="Read an image once (streaming, nothing written): format by magic "
                                    "bytes, compressed and uncompressed size, file count, the tmpfs size "
                                    "the boot would choose, and its sha256 with --sha256.",
                        epilog="examples:\n  tmpfs-root image inspect /srv/images/rootfs.tar.zst\n"
                               "  tmpfs-root image inspect rootfs.tar.zst --sha256 --json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_root(i)
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
    if args.plan:
        try:
            text = Path(args.plan).read_text()
        except OSError as e:
            raise UsageError(f"error: --plan '{args.plan}': cannot be read ({e.strerror})") from None
        try:
            plan = Plan.from_toml(text, origin=f"--plan '{args.plan}'")
        except PlanError as e:
            raise UsageError(f"error: {e}") from None
        for key, value in given.items():  # options given beside --plan override it
            if value is not None:
                setattr(plan, key, value)
        return plan
    plan = Plan()
    for key, value in given.items():
        if value is not None:
            setattr(plan, key, value)
    return plan


def _host(args, dry_run: bool = False):
    from tui.host import Host

    root = args.root
    if not os.path.isdir(root):
        raise UsageError(f"error: --root '{root}': is not a directory; accepted: a directory "
                         "holding a system, or / for this one")
    return Host(root, dry_run=dry_run)


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

    from tui.devices import discover, human_size, recommended_identifier

    _host(args)
    devices = discover()
    shown = devices if args.all else [d for d in devices if d.usable]
    if args.json:
        print(json.dumps([d.to_json(devices) for d in shown], indent=2))
        return EXIT_OK
    console = Console()
    table = Table(title="Block devices that can hold the image" + ("" if not args.all else " (all)"))
    for col in ("DEVICE", "TYPE", "SIZE", "FS", "LABEL", "UUID", "PARTLABEL", "MOUNTED", "MODEL",
                "USE AS SOURCE"):
        table.add_column(col, overflow="fold")
    for d in shown:
        extra = " ".join(d.extra_args())
        table.add_row(d.path, d.type, human_size(d.size), d.fstype or "", d.label or "", d.uuid or "",
                      d.partlabel or "", ", ".join(d.mountpoints), d.model or "",
                      (recommended_identifier(d, devices) + (f" {extra}" if extra else ""))
                      if d.usable else "")
    if not shown:
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
        print(f"tmpfs-root: {line}", file=sys.stderr)
    return problems


def cmd_plan(args) -> int:
    from tui.transaction import record
    from tui.validation import errors

    plan = plan_from_args(args)
    host = _host(args, dry_run=True)
    devices, warning = _discover()
    problems = _validate(plan, host, devices, warning)
    if errors(problems):
        if args.json:
            print(json.dumps({"valid": False, "problems": [p.to_json() for p in problems]}, indent=2))
        return EXIT_USAGE
    resolved = record(plan, host, devices)
    if args.save:
        _save_plan(args.save, plan)
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


def _save_plan(path: str, plan) -> None:
    from tui.host import atomic_write

    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(f"error: --save '{path}': directory {target.parent} does not exist")
    atomic_write(target, plan.to_toml().encode())


def _print_plan(resolved, host) -> None:
    from rich.console import Console

    console = Console(soft_wrap=True)
    console.print("[bold]Kernel command line[/bold] (added to each entry):")
    console.print("  " + " ".join(resolved.cmdline), markup=False, highlight=False)
    console.print(f"[bold]Kernels[/bold]: {', '.join(resolved.kernels)}")
    console.print(f"[bold]Entry title[/bold]: {resolved.title}", highlight=False)
    console.print(f"[bold]Files it would write[/bold] (under {host.root}):")
    for action in host.written_files():
        console.print(f"  {action.kind:6} {action.path}", markup=False, highlight=False)
    console.print("[bold]Commands it would run[/bold]" + ("" if host.is_live else f" (chroot {host.root})") + ":")
    for action in host.commands():
        console.print("  " + action.describe(), markup=False, highlight=False)


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

    from tui.devices import human_size
    from tui.validation import mem_total

    console = Console(stderr=True)
    if args.image_command == "inspect":
        from tui.images import ImageError, inspect

        try:
            with _progress_bar(console, "reading", False) as bar:
                task = bar.add_task("read", total=None)
                info = inspect(args.file, with_sha256=args.sha256, ram=mem_total(),
                               progress=lambda done, total: bar.update(task, completed=done, total=total))
        except ImageError as e:
            raise UsageError(f"error: FILE {e}") from None
        if args.json:
            print(json.dumps(info.to_json(), indent=2))
            return EXIT_OK
        print(f"{info.path}: {info.format} archive")
        print(f"  compressed    {human_size(info.compressed)} ({info.compressed} bytes)")
        print(f"  uncompressed  {human_size(info.uncompressed)} ({info.uncompressed} bytes, "
              f"{info.compressed / max(info.uncompressed, 1):.0%} packed)")
        print(f"  files         {info.files}")
        print(f"  tmpfs size    {info.recommended_size} recommended (--size; image + half again, "
              "at least 256M more, at most 90% of RAM)")
        if info.sha256:
            print(f"  sha256        {info.sha256}")
        return EXIT_OK

    from tui.image_create import DEFAULT_FORMAT, CreateError, create, make_plan

    fmt = args.format or DEFAULT_FORMAT
    try:
        plan = make_plan(args.source, args.output, fmt, args.level, args.exclude, args.with_mount)
    except CreateError as e:
        raise UsageError(f"error: {e}") from None
    if plan.output.exists() and not args.yes:
        raise UsageError(f"error: --output '{args.output}': exists; pass --yes to replace it")
    for m in plan.skipped_mounts:
        console.print(f"tmpfs-root: note: /{m} is a separate filesystem and is not packed "
                      f"(add --with-mount /{m})", highlight=False)
    try:
        with _progress_bar(console, "packing", True) as bar:
            task = bar.add_task("pack", total=None, files="")

            def show(done, total, files, files_total):
                bar.update(task, completed=done, total=total, files=f"{files}/{files_total} files")

            made = create(plan, progress=show)
    except CreateError as e:
        raise UsageError(f"error: {e}") from None
    for w in made.warnings[:20]:
        console.print(f"tmpfs-root: warning: tar: {w}", highlight=False)
    print(f"{made.path}: {human_size(made.size)}, {made.files} files, sha256 {made.sha256} "
          f"(in {made.path}.sha256)")
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
        raise UsageError(f"error: {what}: no terminal to ask for confirmation on; pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError(f"error: {what}: not confirmed; nothing was changed")


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
        if self.verbose:
            self.console.print(f"      | {line}", markup=False, highlight=False)
        elif self.status:
            self.status.update(line[-100:])


def _report_failure(console, e) -> None:
    for line in e.tail[-15:]:
        console.print(f"      | {line.rstrip()}", markup=False, highlight=False)


def cmd_apply(args) -> int:
    from rich.console import Console

    from tui.host import Host
    from tui.plan import version_key
    from tui.transaction import TransactionError, apply, record
    from tui.validation import errors

    plan = plan_from_args(args)
    host = _host(args)
    devices, warning = _discover()
    problems = _validate(plan, host, devices, warning)
    if errors(problems):
        return EXIT_USAGE
    preview = Host(host.root, dry_run=True)
    if preview.pending_journal():
        print("tmpfs-root: note: an earlier apply or remove was interrupted; its changes are rolled "
              "back first", file=sys.stderr)
    resolved = record(plan, preview, devices)
    if not preview.actions and not preview.pending_journal():
        print(f"tmpfs-root: already applied to {host.root}; nothing to change")
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
        print("tmpfs-root: interrupted; every step done so far was rolled back", file=sys.stderr)
        return 130
    if outcome.recovered:
        print(f"tmpfs-root: rolled back {len(outcome.recovered)} change(s) left by an interrupted run")
    kver = max(resolved.kernels, key=version_key)
    print(f"Applied to {host.root}: entry 'tmpfs-root-{kver}' ({resolved.title}).")
    if plan.boot == "once":
        print("Next: reboot (systemctl reboot) to boot it once; if it fails, the machine reboots into "
              "its normal entry.")
    elif plan.boot == "default":
        print("Next: reboot (systemctl reboot); it boots from RAM until you run 'tmpfs-root remove'.")
    else:
        print("Next: reboot and choose the entry in the GRUB menu.")
    print("Check after the boot: findmnt / shows tmpfs. Check the setup: tmpfs-root status. "
          "Undo: tmpfs-root remove.")
    return EXIT_OK


def cmd_status(args) -> int:
    from tui.transaction import status

    host = _host(args)
    report = status(host)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_FAILED if report["problems"] else EXIT_OK
    bl = report["bootloader"]
    if not report["installed"]:
        print(f"tmpfs-root is not installed in {host.root}.")
    else:
        print(f"tmpfs-root is installed in {host.root}: boot mode {report['boot']}, entry "
              f"'{report['entry']}', {bl['style']} ({bl['config']})")
        print(f"  command line  {report['cmdline']}")
        for k in report["kernels"]:
            marks = [m for m, on in (("initramfs missing", k["initrd"] is None),
                                     ("no entry", not k["entry"]),
                                     ("older than its kernel", k["older_than_kernel"]),
                                     ("built by another module version", k["module_changed"])) if on]
            print(f"  kernel        {k['kver']}: {', '.join(marks) if marks else 'ok'}")
        changed = [f for f in report["files"] if f["state"] != "ok"]
        print(f"  files         {len(report['files']) - len(changed)} of {len(report['files'])} "
              "as apply wrote them")
        print(f"  boot-once     {'pending: the next reboot boots it' if report['boot_once_pending'] else 'not pending'}")
        if report["default_is_ours"]:
            print("  default       tmpfs-root's entry is the default")
    for problem in report["problems"]:
        print(f"tmpfs-root: attention: {problem}", file=sys.stderr)
    return EXIT_FAILED if report["problems"] else EXIT_OK


def cmd_remove(args) -> int:
    from rich.console import Console

    from tui.transaction import TransactionError, is_installed, remove

    host = _host(args)
    if not is_installed(host) and not host.pending_journal():
        print(f"tmpfs-root is not installed in {host.root}; nothing to remove")
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
        print("tmpfs-root: interrupted; the removal was rolled back", file=sys.stderr)
        return 130
    print(f"Removed tmpfs-root from {host.root}.")
    return EXIT_OK


COMMANDS = {"devices": cmd_devices, "plan": cmd_plan, "apply": cmd_apply, "status": cmd_status,
            "remove": cmd_remove, "image": cmd_image, None: cmd_tui}


def main(argv: list[str] | None = None) -> int:
    from tui.host import HostError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"tmpfs-root: {e}", file=sys.stderr)
        return EXIT_USAGE
    except HostError as e:
        print(f"tmpfs-root: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("tmpfs-root: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # never a traceback for the admin, unless asked
        if os.environ.get("TMPFS_ROOT_DEBUG"):
            raise
        print(f"tmpfs-root: internal error: {type(e).__name__}: {e} "
              "(set TMPFS_ROOT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
