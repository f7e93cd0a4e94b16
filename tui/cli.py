"""The ``tmpfs-root`` command line.

Without a command it opens the TUI.  Every command takes ``--root DIR`` (the
target system, ``/`` by default).  Bad input is reported one line per problem
on stderr with exit status 2, and nothing is written anywhere.

With ``--json`` (devices, plan, apply, status, image inspect) stdout holds one JSON
object and nothing else, whatever happened before it (a rollback of an interrupted
run, notes, warnings, questions: all on stderr); a command that ends in an error (a
``tmpfs-root: error:`` line on stderr, exit status 1, 2 or 130) leaves stdout empty.
A result whose exit status is not 0 is still that one object: ``plan`` of an invalid
plan ({"valid": false, ...}, 2), ``status`` that found problems (1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING

from tui import __version__
from tui.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, BadInput, TmpfsRootError, shown
from tui.plan_fields import FIELDS

if TYPE_CHECKING:
    from tui.engine import Engine, Event, Preview

#: Bad input: one line, exit 2 (the engine's BadInput, named for the command line).
UsageError = BadInput


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line, not a usage block."""

    def error(self, message: str):
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


ROOT_HELP = (
    "the target system: / for this one (default), or a directory holding a system, "
    "e.g. a mounted disk (--root /mnt/target); the same before or after the command"
)


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
        "run `tmpfs-root COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tmpfs-root {__version__}")
    parser.add_argument("--root", metavar="DIR", dest="root_global", default=None, help=ROOT_HELP)
    parser.add_argument(
        "--dry-run",
        dest="dry_run_global",
        action="store_true",
        help="write nothing: the TUI walks the whole flow and shows what Apply would "
        "do; apply, remove and image create show what they would do (the same "
        "before or after the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "devices",
        help="list block devices that can hold the image",
        description="List the block devices (disks, partitions, LVM volumes, RAID, "
        "loop devices) with their filesystem, LABEL, UUID, PARTUUID, "
        "PARTLABEL, mountpoints and the identifier recommended for "
        "root=tmpfs:<source>.",
        epilog="examples:\n  tmpfs-root devices\n  tmpfs-root devices --json | jq .",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_root(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--all", action="store_true", help="also list devices without a filesystem (whole disks, LVM PVs, swap)"
    )

    p = sub.add_parser(
        "plan",
        help="show what a conversion would do (writes nothing)",
        description="Check a conversion and show the kernel command line, every "
        "file it would write and every command it would run. Nothing "
        "is written (except the plan itself with --save).",
        epilog=EPILOG_PLAN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_root(p)
    add_plan_options(p)
    p.add_argument(
        "--save",
        metavar="FILE",
        help="save the plan as TOML (only when it is valid), e.g. --save /root/tmpfs-root.toml",
    )
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")

    p = sub.add_parser(
        "apply",
        help="convert the target: module, initramfs, boot entry",
        description="Check the plan, show it and ask, then: install the dracut module, "
        "build a separate initramfs per kernel (the distro's own is not "
        "touched), install kernel hooks (new kernels get theirs), write the "
        "boot entry, regenerate the GRUB configuration (checked with "
        "grub-script-check before it replaces the old one), set the boot "
        "mode, and record the state in /etc/tmpfs-root. If any step fails, "
        "every step before it is undone. Applying the same plan again "
        "changes nothing; a changed plan updates the setup in place.",
        epilog=EPILOG_APPLY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_root(p)
    add_plan_options(p)
    p.add_argument(
        "--yes", "-y", action="store_true", help="do not ask for confirmation (needed when there is no terminal)"
    )
    _add_dry_run(p, "show what apply would do and write nothing")
    p.add_argument("--verbose", "-v", action="store_true", help="print the full output of dracut and grub-mkconfig")
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object at the end ("changed", "dry_run", "root", "files", "commands", '
        '"recovered": what an interrupted earlier run left and was rolled back; what a configuration '
        "tool such as Ansible reads); the rest goes to stderr, and an error leaves stdout empty",
    )

    p = sub.add_parser(
        "status",
        help="what is installed, and is it intact",
        description="Show the installed setup: the boot mode and entry, each kernel's "
        "initramfs (missing, older than its kernel, built by another module "
        "version), whether every file still matches what apply wrote, and "
        "whether a boot-once is pending. Exit status: 0 intact or not "
        "installed, 1 something needs attention.",
        epilog="examples:\n  tmpfs-root status\n  tmpfs-root status --root /mnt/target --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_root(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "remove",
        help="undo apply",
        description="Remove the boot entry, the kernel hooks, the tmpfs-root initramfs "
        "images, the dracut module and the state, clear a pending boot-once "
        "(and restore the previous default entry), then regenerate the GRUB "
        "configuration. Everything the tool did not create is as before apply.",
        epilog="examples:\n  tmpfs-root remove\n  tmpfs-root remove --root /mnt/target --yes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_root(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _add_dry_run(p, "show what remove would do and write nothing")
    p.add_argument("--verbose", "-v", action="store_true", help="print the full output of grub-mkconfig")

    p = sub.add_parser(
        "image",
        help="create or inspect root images",
        description="Root images: pack a root filesystem into an archive that boots "
        "on a tmpfs root, or inspect an archive.",
    )
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", parser_class=_Parser, required=True)
    c = isub.add_parser(
        "create",
        help="pack a running or mounted root into an image",
        description="Pack a root filesystem (/ or a mounted root) into an archive: "
        "numeric owners, modes, hard links, sparse files, xattrs, ACLs, "
        "SELinux labels and file capabilities are kept; /proc, /sys, /dev, "
        "/run and /tmp contents, swap files, the output and its folder are "
        "not packed. The image's /etc/fstab (not the host's) has its / "
        "entry and the images volume's entry commented out. Written under "
        "a temporary name (0600 while written), renamed at the end, with FILE.sha256 "
        "beside it (the whole file's: sha256sum -c FILE.sha256 checks it) and FILE.pin "
        "(what the boot pins, for plan --sha256: a sharded image's is the sha256 of its "
        "index, which lists every shard's), all 0600 unless --mode widens them. FILE's "
        "suffix must name --format (e.g. .tar.zst); an output inside the tree is refused "
        "when its folder holds anything else to pack. The default zst image is sharded: independent zstd "
        "tar streams behind an index, unpacked in parallel at boot (one worker per "
        "core); `zstd -dc FILE | tar -x --ignore-zeros` also unpacks it.",
        epilog="examples:\n"
        "  tmpfs-root image create --from / --output /srv/images/rootfs.tar.zst\n"
        "  tmpfs-root image create --from / --output /srv/images/rootfs.tar.zst --shards 1\n"
        "  tmpfs-root image create --from /mnt/target --output root.tar.gz --format gz "
        "--exclude /var/cache/apt/archives/*.deb\n"
        "  tmpfs-root image create --from / --output /srv/images/r.tar.zst --with-mount /home",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        required=True,
        help="the root to pack: / for this system, or a mounted root (e.g. /mnt/target)",
    )
    c.add_argument(
        "--output", metavar="FILE", required=True, help="the archive to write, e.g. /srv/images/rootfs.tar.zst"
    )
    c.add_argument(
        "--format",
        default=None,
        metavar="FMT",
        help="zst (default: sharded, unpacked in parallel; see --shards), gz, xz, lz4, tar",
    )
    c.add_argument(
        "--level",
        type=int,
        default=None,
        metavar="N",
        help="compression level (zst 1-19, default 3; gz 1-9, 6; xz 0-9, 6; lz4 1-12, 1)",
    )
    c.add_argument(
        "--shards",
        default="auto",
        metavar="N|auto",
        help="zst only: split into N shards unpacked in parallel at boot (auto: one per "
        "32 MiB of the tree, 2 to 64; 1: one zstd stream, as before)",
    )
    c.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out what matches, repeatable; /path anchors at the root "
        "(e.g. --exclude '/var/cache/apt/archives/*.deb')",
    )
    c.add_argument(
        "--with-mount",
        action="append",
        default=[],
        metavar="PATH",
        help="also pack a separate filesystem mounted below the root (/usr and /var "
        "always are), e.g. --with-mount /home",
    )
    c.add_argument(
        "--mode",
        default="0600",
        metavar="OCTAL",
        help="permissions of FILE, FILE.sha256 and FILE.pin (default 0600: the image holds /etc/shadow and "
        "the SSH host keys); at most 0644, e.g. --mode 0640 for a web server's group",
    )
    from tui.image_create import PER_HOST

    c.add_argument(
        "--generic",
        action="store_true",
        help="a fleet image, booted on many hosts: leave out what must differ per host, so every "
        "node has its own identity (the tree is not changed): " + "; ".join(f"{p[1:]} ({why})" for p, why in PER_HOST),
    )
    c.add_argument("--yes", action="store_true", help="replace FILE if it exists")
    _add_dry_run(c, "show what would be packed (folders, mounts and per-host files left out, size) and write nothing")
    i = isub.add_parser(
        "inspect",
        help="format, sizes, file count and recommended tmpfs size",
        description="Read an image once (streaming, nothing written): format by magic "
        "bytes, compressed and uncompressed size, file count, the tmpfs size "
        "the boot would choose, and its sha256 with --sha256.",
        epilog="examples:\n  tmpfs-root image inspect /srv/images/rootfs.tar.zst\n"
        "  tmpfs-root image inspect rootfs.tar.zst --sha256 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("file", metavar="FILE", help="the archive to inspect")
    i.add_argument(
        "--sha256",
        action="store_true",
        help="also compute its sha256 (the whole file's) and its pin (what plan --sha256 takes)",
    )
    i.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def add_plan_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plan")
    g.add_argument("--plan", metavar="FILE", help="load a saved plan (TOML) instead of the options below")
    for f in FIELDS:
        g.add_argument(f.option, **f.argparse_kwargs())


def plan_from_args(args, engine: Engine) -> None:
    """The engine's plan from --plan FILE (if given) and the plan options, which win."""
    if args.plan is not None:
        engine.load_plan(args.plan)
    engine.edit(**{f.name: getattr(args, f.name) for f in FIELDS if getattr(args, f.name) is not None})


def _merge_globals(args) -> None:
    """--root and --dry-run mean the same before or after the command; two different --root
    values are refused (never one silently winning)."""
    before, after = args.root_global, getattr(args, "root_cmd", None)
    if args.command == "image" and (before or after):
        raise UsageError(
            "--root: image commands work on paths of this machine; accepted: --from DIR for create, FILE for inspect"
        )
    for value in (before, after):
        if value is not None and (not value or "\0" in value):
            raise UsageError(f"--root {shown(value)}: accepted: a directory holding a system, or / for this one")
    if before and after and os.path.realpath(before) != os.path.realpath(after):
        raise UsageError(
            f"--root given twice, {shown(before)} before the command and {shown(after)} after it; accepted: one target"
        )
    args.root = after or before or "/"
    args.dry_run = args.dry_run_global or getattr(args, "dry_run_cmd", False)


def _check_root(args) -> None:
    if not os.path.isdir(args.root):
        raise UsageError(
            f"--root {shown(args.root)}: is not a directory; accepted: a directory holding a system, or / for this one"
        )


def _engine(args, dry_run: bool = False) -> Engine:
    from tui.engine import Engine

    _check_root(args)
    return Engine(args.root, dry_run=dry_run)


# ------------------------------------------------------------------ commands
def cmd_devices(args) -> int:
    from tui.devices import human_size, no_filesystem, recommended_identifier
    from tui.errors import escape

    engine = _engine(args)
    devices = engine.facts.devices
    if devices is None:
        say(f"error: devices: {'; '.join(engine.facts.notes)}")
        return EXIT_FAILED
    for note in engine.facts.notes:
        say(f"note: devices: {note}")
    if args.json:
        listed = devices if args.all else [d for d in devices if d.usable]
        print(json.dumps([d.to_json(devices) for d in listed], indent=2))
        return EXIT_OK
    # lsblk's shape: disks, then their partitions and volumes below them; every value whole on
    # its line (never folded), so that an identifier can be copied as it is.
    tree = [(d, depth) for d, depth in engine.device_tree() if args.all or d.usable or _has_usable_child(d, devices)]
    if not any(d.usable for d, _ in tree) and not (args.all and tree):
        print("No block device with a filesystem found (use --all to list every device).")
        return EXIT_OK
    header = ["NAME", "TYPE", "SIZE", "FSTYPE", "LABEL", "MOUNTPOINTS", "USE AS SOURCE (root=tmpfs:…)"]
    rows = []
    for d, depth in tree:
        extra = " ".join(d.extra_args())
        source = (recommended_identifier(d, devices) + (f" {extra}" if extra else "")) if d.usable else ""
        if args.all and not d.usable:  # every device listed says why it cannot be one
            source = f"none: {no_filesystem(d)}"
        name = ("  " * (depth - 1) + "└─" if depth else "") + d.path
        rows.append([name, d.type, human_size(d.size), d.fstype or "", d.label or "", ",".join(d.mountpoints), source])
    rows = [[escape(c) or "-" if i < 6 else escape(c) for i, c in enumerate(r)] for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(
        "\nUSE AS SOURCE is the recommended identifier (UUID=, else PARTUUID=, else a label only one "
        "device has); `tmpfs-root devices --json` lists every identifier of each device"
        + (", and why_no_fs of a device without a filesystem." if args.all else ".")
    )
    return EXIT_OK


def _has_usable_child(dev, devices) -> bool:
    return any(d.parent == dev.name and d.usable for d in devices)


def _validate(engine: Engine) -> list:
    """Every problem of the engine's plan, printed one line each on stderr (with what could
    not be gathered about this machine, as warnings)."""
    problems = engine.problems()
    for line in [p.line() for p in problems] + [f"warning: devices: {n}" for n in engine.facts.notes]:
        say(line)
    return problems


def cmd_plan(args) -> int:
    from tui.plan import check_save_path
    from tui.validation import errors

    if args.save is not None:
        check_save_path(args.save)
    engine = _engine(args, dry_run=True)
    plan_from_args(args, engine)
    problems = _validate(engine)
    if errors(problems):
        if args.json:
            print(json.dumps({"valid": False, "problems": [p.to_json() for p in problems]}, indent=2))
        return EXIT_USAGE
    preview = engine.preview()
    if args.save is not None:
        engine.save_plan(args.save)
    if args.json:
        resolved = preview.resolved
        assert resolved is not None
        print(
            json.dumps(
                {
                    "valid": True,
                    "cmdline": " ".join(resolved.entry_cmdline),
                    "inherited": resolved.inherited,
                    "kernels": resolved.kernels,
                    "title": resolved.title,
                    "initrds": resolved.initrds,
                    "files": [a.to_json() for a in preview.files],
                    "commands": [a.argv for a in preview.commands],
                    "problems": [p.to_json() for p in problems],
                    "plan": engine.plan.to_json(),
                },
                indent=2,
            )
        )
        return EXIT_OK
    _print_preview(preview)
    return EXIT_OK


def _print_preview(preview: Preview) -> None:
    """The command line, the title, and every file and command of a preview."""
    from rich.console import Console
    from rich.text import Text

    from tui.errors import escape

    console = Console(soft_wrap=True, highlight=False)
    root = escape(str(preview.root))
    if preview.resolved is not None:
        console.print("[bold]Kernel command line[/bold] of each entry:")
        console.print("  " + " ".join(preview.resolved.entry_cmdline), markup=False)
        if preview.resolved.inherited:
            console.print(
                f"  (the first {len(preview.resolved.inherited)} from GRUB_CMDLINE_LINUX and "
                "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, as the normal entry has them)",
                markup=False,
            )
        console.print(Text.assemble(("Kernels", "bold"), f": {', '.join(preview.resolved.kernels)}"))
        console.print(Text.assemble(("Entry title", "bold"), f": {escape(preview.resolved.title)}"))
    console.print(Text.assemble(("Files it would write", "bold"), f" (under {root}):"))
    for action in preview.files:
        console.print(f"  {action.kind:6} {action.path}", markup=False)
    console.print(
        Text.assemble(("Commands it would run", "bold"), ("" if preview.is_live else f" (chroot {root})") + ":")
    )
    for action in preview.commands:
        console.print("  " + escape(action.describe()), markup=False)


def cmd_tui(args) -> int:
    _check_root(args)  # as for every command (the engine itself is made once the screen is up)
    # Without a terminal (cron, a pipe, ssh without -t) the screen would write escape codes
    # and wait for keys for ever: one line saying what to run instead.
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        from tui.hints import command

        raise UsageError(
            "the screen needs a terminal (stdin and stdout are not one); without one use the commands, "
            f"e.g. {command(args.root, 'plan', '--source', 'SRC', '--image', 'PATH')}, then "
            f"{command(args.root, 'apply')} (tmpfs-root --help lists them)"
        )
    from screens.app import run_app

    return run_app(root=args.root, dry_run=args.dry_run)


def _progress_bar(console, label: str, unit_files: bool):
    """A progress bar; *unit_files*: packing's, with files and the engine's pace (rate and time
    left that stay true while the compressor holds still) in place of rich's own."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = [TextColumn(label), BarColumn(), DownloadColumn()]
    if unit_files:
        columns += [TextColumn("{task.fields[files]}"), TextColumn("{task.fields[pace]}")]
    else:
        columns += [TransferSpeedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def cmd_image(args) -> int:
    from rich.console import Console

    from tui.engine import Engine

    console = Console(stderr=True, highlight=False)
    engine = Engine("/")
    if args.image_command == "inspect":
        return _image_inspect(args, console, engine)
    return _image_create(args, console, engine)


def _image_inspect(args, console, engine: Engine) -> int:
    from tui.devices import human_size
    from tui.errors import escape
    from tui.images import inspect

    with _progress_bar(console, "reading", False) as bar:
        task = bar.add_task("read", total=None)
        info = inspect(
            args.file,
            with_sha256=args.sha256,
            ram=engine.facts.ram,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    for warning in info.warnings:
        say(f"warning: FILE {warning}")
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return EXIT_OK
    print(f"{escape(info.path)}: {info.format} archive")
    print(f"  compressed    {human_size(info.compressed)} ({info.compressed} bytes)")
    print(
        f"  uncompressed  {human_size(info.uncompressed)} ({info.uncompressed} bytes, "
        f"{info.compressed / max(info.uncompressed, 1):.0%} packed)"
    )
    print(f"  files         {info.files}")
    print(
        f"  tmpfs size    {info.recommended_size} recommended (--size; image + half again, "
        "at least 256M more, at most 90% of RAM)"
    )
    if info.sha256:
        print(f"  sha256        {info.sha256} (of the whole file, as sha256sum prints it)")
    if info.pin:
        what = "the same" if info.pin == info.sha256 else f"{info.pin} (of the index, which lists every shard's sha256)"
        print(f"  pin           {what}: what the boot checks (plan --sha256, rd.tmpfs.sha256)")
    if info.shards:
        _print_shards(info.shards)
    return EXIT_OK


def _print_shards(parts: list[dict]) -> None:
    """The parts of a sharded image and how evenly the shards share the work."""
    from tui.devices import human_size

    shards = [p for p in parts if p["kind"] == "files"]
    biggest = max(p["uncompressed"] for p in shards)
    mean = sum(p["uncompressed"] for p in shards) / len(shards)
    print(f"  shards        {len(shards)}, the biggest {biggest / mean:.2f}x the mean (unpacked in parallel)")
    print("    part          offset  compressed  uncompressed  entries")
    for n, p in enumerate(parts, 1):
        name = "dirs" if p["kind"] == "dirs" else f"shard {n}"
        print(
            f"    {name:<9} {p['offset']:>10}  {human_size(p['compressed']):>10}  "
            f"{human_size(p['uncompressed']):>12}  {p['entries']:>7}"
        )


def _image_create(args, console, engine: Engine) -> int:
    from tui.devices import human_size
    from tui.errors import escape
    from tui.image_create import Pace, parse_mode

    mode = parse_mode(args.mode)
    plan = engine.plan_image(
        args.source, args.output, args.format, args.level, args.exclude, args.with_mount, args.shards
    )
    plan.mode = mode
    if args.generic:
        plan.make_generic()
    if plan.output.exists() and not args.yes and not args.dry_run:
        raise UsageError(f"--output {shown(args.output)}: exists; pass --yes to replace it")
    for m in plan.skipped_mounts:
        say(f"note: /{escape(m)} is a separate filesystem and is not packed (add --with-mount /{escape(m)})")
    if args.dry_run:
        for line in engine.image_dry_run(plan):
            print(line)
        return EXIT_OK
    pace = Pace()
    # SIGHUP too: a dropped ssh session removes the partial file as SIGTERM does.
    with _progress_bar(console, "packing", True) as bar, _cancel_on_signals(engine, signal.SIGHUP):
        task = bar.add_task("pack", total=None, files="", pace="")

        def show(done, total, files, files_total):
            pace.update(done, total)
            bar.update(task, completed=done, total=total, files=f"{files}/{files_total} files", pace=pace.text())

        made = engine.create_image(plan, progress=show)
    for line in made.notes():
        say(line)
    print(f"{escape(made.path)}: {human_size(made.size)}, {made.files} files")
    for line in made.sums():
        print(f"  {line}")
    return EXIT_OK


# ------------------------------------------------------------ apply / remove
@contextlib.contextmanager
def _cancel_on_signals(engine: Engine, *also: signal.Signals):
    """Ctrl-C and SIGTERM (and the signals in *also*) cancel the engine's work (which stops
    its command and rolls back); a second one interrupts at once."""

    def handler(signum, frame):
        if engine.cancel_token.cancelled:
            raise KeyboardInterrupt
        engine.cancel()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, *also)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _confirm(question: str, yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{what}: no terminal to ask for confirmation on; pass --yes")
    print(f"{one_line(question)} [y/N] ", end="", file=sys.stderr, flush=True)  # stdout may be --json's
    answer = input().strip().lower()
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
        self.tail: list[str] = []

    def __call__(self, event: Event) -> None:
        if event.kind == "line":
            self.on_line(event.text)
        else:
            self.on_step(event.index, event.total, event.text, event.state, event.note)

    def on_step(self, i: int, total: int, name: str, state: str, note: str) -> None:
        if state == "start":
            self.started = self.clock()
            self.tail = []
            self.console.print(f"[{i + 1}/{total}] {name} …", markup=False, highlight=False)
            if self.console.is_terminal and not self.verbose:
                status = self.console.status(name)
                status.start()
                self.status = status
            return
        if self.status:
            self.status.stop()
            self.status = None
        took = self.clock() - self.started
        if state == "done":
            self.console.print(f"      {note or 'done'} ({took:.1f} s)", markup=False, highlight=False)
        else:
            self.console.print(f"      FAILED after {took:.1f} s", markup=False, highlight=False)
            if not self.verbose:  # what the command said last, for the cause
                for line in self.tail[-15:]:
                    self.console.print(f"      | {line}", markup=False, highlight=False)

    def on_line(self, line: str) -> None:
        line = one_line(line)
        self.tail = (self.tail + [line])[-15:]
        if self.verbose:
            self.console.print(f"      | {line}", markup=False, highlight=False)
        elif self.status:
            from rich.text import Text

            self.status.update(Text(line[-100:]))


def _run_transaction(engine: Engine, mode: str, verbose: bool):
    from rich.console import Console

    printer = StepPrinter(Console(stderr=True, highlight=False), verbose)
    # SIGHUP too: a dropped ssh session stops the step and rolls back, as SIGTERM does,
    # rather than leaving the journal for the next run to undo.
    with _cancel_on_signals(engine, signal.SIGHUP):
        outcome = engine.apply(printer) if mode == "apply" else engine.remove(printer)
    if engine.log_error:
        say(f"warning: {engine.log_error}")
    if engine.log_note:
        say(f"note: {engine.log_note}")
    return outcome


def cmd_apply(args) -> int:
    from tui.plan import version_key
    from tui.validation import errors

    engine = _engine(args, dry_run=args.dry_run)
    plan_from_args(args, engine)
    if errors(_validate(engine)):
        return EXIT_USAGE
    interrupted = engine.interrupted()
    if interrupted:
        say("note: an earlier apply or remove was interrupted; its changes are rolled back first")
    preview = engine.preview()
    # With --json, stdout carries the one JSON object only; what people read goes to stderr.
    out = partial(print, file=sys.stderr) if args.json else print

    def report(changed: bool, recovered: list[str] | None = None) -> None:
        if args.json:
            print(
                json.dumps(
                    {
                        "changed": changed,
                        "dry_run": args.dry_run,
                        "root": str(engine.root),
                        "files": [a.to_json() for a in preview.files],
                        "commands": [a.to_json() for a in preview.commands],
                        "recovered": recovered or [],
                    },
                    indent=2,
                )
            )

    if not preview.files and not preview.commands and not interrupted:
        out(f"tmpfs-root: already applied to {one_line(str(engine.root))}; nothing to change")
        report(False)
        return EXIT_OK
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        _print_preview(preview)
    if args.dry_run:
        out("(dry run: nothing was written)")
        report(True)  # what a real apply would change
        return EXIT_OK
    _confirm(f"Apply these changes to {engine.root}?", args.yes, "apply")
    if engine.plan.boot == "default":
        _confirm(
            "--boot default: every reboot will boot this entry (root in RAM) until you change "
            f"it or run `{engine.command('remove')}`. Make it the default?",
            args.yes,
            "--boot default",
        )
    outcome = _run_transaction(engine, "apply", args.verbose)
    if outcome.recovered:  # a note for people, on stderr as every note (stdout may be --json's)
        say(f"rolled back {len(outcome.recovered)} change(s) left by an interrupted run")
    assert preview.resolved is not None
    kver = max(preview.resolved.kernels, key=version_key)
    out(one_line(f"Applied to {engine.root}: entry 'tmpfs-root-{kver}' ({preview.resolved.title})."))
    out(engine.next_steps())
    report(outcome.changed or bool(outcome.recovered), outcome.recovered)  # a rollback changed the target too
    return EXIT_OK


def cmd_status(args) -> int:
    engine = _engine(args)
    report = engine.status()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_FAILED if report["problems"] else EXIT_OK
    for line in engine.status_lines(report):
        print(one_line(line))
    for problem in report["problems"]:
        say(f"attention: {problem}")
    return EXIT_FAILED if report["problems"] else EXIT_OK


def cmd_remove(args) -> int:
    engine = _engine(args)
    if not engine.is_installed() and not engine.interrupted():
        print(one_line(f"tmpfs-root is not installed in {engine.root}; nothing to remove"))
        return EXIT_OK
    if args.dry_run:
        _print_preview(engine.preview("remove"))
        print("(dry run: nothing was written)")
        return EXIT_OK
    _confirm(
        f"Remove tmpfs-root (entry, hooks, module, initramfs images, state) from {engine.root}?", args.yes, "remove"
    )
    _run_transaction(engine, "remove", args.verbose)
    print(one_line(f"Removed tmpfs-root from {engine.root}."))
    return EXIT_OK


COMMANDS = {
    "devices": cmd_devices,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "status": cmd_status,
    "remove": cmd_remove,
    "image": cmd_image,
    None: cmd_tui,
}


def say(line: str) -> None:
    """One line on stderr, prefixed, with anything a terminal would interpret escaped."""
    print(f"tmpfs-root: {one_line(line)}", file=sys.stderr)


def one_line(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)


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
        say("interrupted; what was done so far was rolled back")
        return EXIT_INTERRUPTED
    except Exception as e:  # never a traceback for the admin, unless asked
        if os.environ.get("TMPFS_ROOT_DEBUG"):
            raise
        say(f"internal error: {type(e).__name__}: {e} (set TMPFS_ROOT_DEBUG=1 for a traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
