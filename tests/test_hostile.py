"""Hostile input, table-driven, through the command line's entry point (tui.cli.main, run
in-process so that the table stays quick; test_cli_validation.py runs the program itself):
options in every place,
plan files, values built to inject or overflow, damaged state in the target, targets laid
out to trick the tool, image archives, outputs that are not files.

Every case asserts: the exit status (2 bad input, 1 a runtime failure or a damaged target,
0 where the input is handled rather than refused); exactly one ``tmpfs-root:`` line on
stderr when it is refused (progress lines aside), naming what is at fault; no traceback;
the target unchanged when refused (a digest of the whole tree); and nothing changed
outside the target: a canary directory beside it, with a file, a device node and a
subdirectory, has the same digest after every case.

The target is a fake system whose dracut and GRUB tools are busybox stand-ins
(tests/infra.FAKE_TOOLS), so that apply and remove really run here in well under a
second; the real tools run in test_apply.py."""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra import FAKE_KVER, cli_inproc, make_tool_target, tree_digest

BASE = ["--source", "nfs:10.0.0.11:/srv/images", "--image", "images/rootfs.tar.zst"]
TARGET_ONLY_DIGEST = object()


@dataclass
class World:
    tmp: Path
    target: Path
    canary: Path

    def fmt(self, arg: str) -> str:
        return arg.replace("{T}", str(self.target)).replace("{C}", str(self.canary)).replace("{W}", str(self.tmp))


@dataclass
class Case:
    id: str
    argv: list[str]  # {T}: the target, {C}: the canary directory, {W}: a scratch directory
    code: int = 2
    says: str = ""  # in the one tmpfs-root: line (or in stdout when code is 0)
    setup: Callable[[World], None] | None = None
    installed: bool = False  # apply a good plan first, so that the target has tmpfs-root's state
    target_changes: bool = False  # a handled case that may write in the target (never outside)
    check: Callable[[World, object], None] | None = None
    tags: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ helpers
def write(rel: str, data: bytes | str) -> Callable[[World], None]:
    def setup(w: World) -> None:
        p = w.fmt(rel) if rel.startswith("{") else str(w.target / rel)
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_bytes(data if isinstance(data, bytes) else data.encode())

    return setup


def fifo(path: str) -> Callable[[World], None]:
    def setup(w: World) -> None:
        p = Path(w.fmt(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(p)

    return setup


def link(rel: str, to: str) -> Callable[[World], None]:
    def setup(w: World) -> None:
        p = w.target / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            import shutil

            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        os.symlink(w.fmt(to), p)

    return setup


def both(*setups) -> Callable[[World], None]:
    def setup(w: World) -> None:
        for s in setups:
            s(w)

    return setup


def archive(members: list[tuple[str, str, str]]) -> bytes:
    """A tar archive of (name, kind, data-or-link) members, built without touching any disk."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data.encode()))
    return buf.getvalue()


GOOD_TREE = [("./", "dir", ""), ("./etc", "dir", ""), ("./etc/os-release", "file", "ID=x\n")]


def plan_case(id: str, says: str, *over: str, command: str = "plan", code: int = 2) -> Case:
    """A plan with BASE's values and *over* options appended (later ones win)."""
    extra = ["--yes"] if command == "apply" else []
    return Case(id, [command, "--root", "{T}", *BASE, *over, *extra], code, says)


def damaged(path: str, data: bytes | str, command: list[str], says: str, code: int = 1) -> Case:
    return Case(
        f"damaged-{path.rsplit('/', 1)[1]}-{command[0]}-{zlib.crc32(str(data).encode()) % 1000}",
        [command[0], "--root", "{T}", *command[1:]],
        code,
        says,
        setup=write(path, data),
        installed=True,
    )


STATE = "etc/tmpfs-root/state.json"
JOURNAL = "var/lib/tmpfs-root/backup/journal.json"
LONG = "x" * 3000

# --------------------------------------------------------------------- cases
CASES: list[Case] = [
    # the right system: options before or after the command mean the same
    Case(
        "root-before-remove",
        ["--root", "{T}", "remove", "--yes"],
        0,
        "Removed tmpfs-root from {T}",
        installed=True,
        target_changes=True,
        check=lambda w, r: not (w.target / "etc/tmpfs-root").exists(),
    ),
    Case(
        "dry-run-before-apply",
        ["--dry-run", "apply", "--root", "{T}", *BASE, "--yes"],
        0,
        "dry run: nothing was written",
    ),
    Case(
        "dry-run-before-remove",
        ["--dry-run", "--root", "{T}", "remove", "--yes"],
        0,
        "dry run: nothing was written",
        installed=True,
    ),
    Case("root-twice", ["--root", "{T}", "plan", "--root", "{W}", *BASE], 2, "--root given twice"),
    Case("root-empty", ["--root", "", "plan", *BASE], 2, "--root"),
    Case("root-empty-after", ["plan", "--root=", *BASE], 2, "--root"),
    Case("root-missing", ["status", "--root", "{W}/absent"], 2, "--root"),
    Case("root-a-file", ["status", "--root", "{C}/victim"], 2, "is not a directory"),
    Case("root-for-image", ["--root", "{T}", "image", "inspect", "{C}/victim"], 2, "--root"),
    Case("root-newline", ["status", "--root", "{W}/a\nb"], 2, "--root"),
    # the source
    plan_case("source-dotdot", "--source", "--source", "/dev/../etc/passwd"),
    plan_case("source-dot", "--source", "--source", "/dev/./vda1"),
    plan_case("source-double-slash", "--source", "--source", "/dev//vda1"),
    plan_case("source-bare-dev", "--source", "--source", "/dev/"),
    plan_case("source-semicolon", "--source", "--source", "/dev/vda1;reboot"),
    plan_case("source-subshell", "--source", "--source", "LABEL=$(reboot)"),
    plan_case("source-brace", "--source", "--source", "LABEL=a}b"),
    plan_case("source-escape", "--source", "--source", "LABEL=\x1b[31mred"),
    plan_case("source-newline", "--source", "--source", "LABEL=a\nroot=/dev/sda"),
    plan_case("source-long-label", "--source", "--source", "LABEL=" + "x" * 300),
    plan_case("source-long", "--source", "--source", "nfs:host:/" + "x" * 1100),
    plan_case("source-uuid-path", "--source", "--source", "UUID=../../etc"),
    plan_case("source-partuuid-bang", "--source", "--source", "PARTUUID=xyz!"),
    plan_case("source-nfs-options", "--source", "--source", "nfs:host:/x,vers=3;reboot"),
    plan_case("source-rtl", "--source", "--source", "LABEL=a\u202eb"),
    # the image path
    plan_case("image-absolute", "--image", "--image", "/images/root.tar"),
    plan_case("image-dotdot", "--image", "--image", "images/../../root.tar"),
    plan_case("image-brace", "--image", "--image", "images/{a}.tar"),
    plan_case("image-hash", "--image", "--image", "images/#.tar"),
    plan_case("image-pipe", "--image", "--image", "a|b.tar"),
    plan_case("image-amp", "--image", "--image", "a&b.tar"),
    plan_case("image-lt", "--image", "--image", "a<b.tar"),
    plan_case("image-glob", "--image", "--image", "images/*.tar"),
    plan_case("image-bracket", "--image", "--image", "images/[a].tar"),
    plan_case("image-newline", "--image", "--image", "a\nb.tar"),
    plan_case("image-long", "--image", "--image", "i/" + "x" * 1100),
    plan_case("image-tab", "--image", "--image", "a\tb.tar"),
    # sizes the boot's arithmetic cannot hold
    plan_case("size-16E", "--size", "--size", "16E"),
    plan_case("size-5E", "--size", "--size", "5E"),
    plan_case("size-1e30", "--size", "--size", "1e30"),
    plan_case("size-20-digits", "--size", "--size", "99999999999999999999"),
    plan_case("size-hex", "--size", "--size", "0x10G"),
    plan_case("size-negative", "--size", "--size=-1G"),
    plan_case("size-fraction", "--size", "--size", "1.5G"),
    plan_case("size-percent-zero", "--size", "--size", "0%"),
    plan_case("size-percent-101", "--size", "--size", "101%"),
    plan_case("size-space", "--size", "--size", " 1G"),
    plan_case("size-16E-apply", "--size", "--size", "16E", command="apply"),
    # the title
    plan_case("title-newline", "--title", "--title", "a\nmenuentry 'x' {"),
    plan_case("title-tab", "--title", "--title", "a\tb"),
    plan_case("title-escape", "--title", "--title", "\x1b]0;pwned\x07"),
    plan_case("title-long", "--title", "--title", "t" * 201),
    plan_case("title-rtl", "--title", "--title", "abc\u202edef"),
    plan_case("title-spaces", "--title", "--title", "   "),
    plan_case("title-10k", "--title", "--title", "t" * 10240),
    # extra kernel arguments
    plan_case("append-panic0-once", "--append", "--append", "panic=0"),
    plan_case("append-shell-once", "--append", "--append", "rd.shell=1"),
    plan_case("append-bare-shell-once", "--append", "--append", "quiet rd.shell"),
    plan_case("append-halt-once", "--append", "--append", "rd.emergency=halt"),
    plan_case("append-break-once", "--append", "--append", "rd.break=pre-mount"),
    plan_case("append-dollar", "--append", "--append", "memmap=1G$4G"),
    plan_case("append-brace", "--append", "--append", "a}"),
    plan_case("append-semicolon", "--append", "--append", "a;b"),
    plan_case("append-quote", "--append", "--append", 'a="b c"'),
    plan_case("append-backslash", "--append", "--append", "a\\b"),
    plan_case("append-hash", "--append", "--append", "#x"),
    plan_case("append-root", "--append", "--append", "root=/dev/sda1"),
    plan_case("append-imgfile", "--append", "--append", "rd.tmpfs.imgfile=x"),
    plan_case("append-long", "--append", "--append", LONG),
    plan_case("append-too-long-cmdline", "kernel command line", "--append", " ".join(["console=ttyS0,115200n8"] * 85)),
    plan_case("append-newline", "--append", "--append", "quiet\ninit=/bin/sh"),
    plan_case("append-panic0-apply", "--append", "--append", "panic=0", command="apply"),
    # kernels
    plan_case("kernel-dotdot", "--kernel", "--kernel", "../../etc"),
    plan_case("kernel-quote", "--kernel", "--kernel", "6.1'x"),
    plan_case("kernel-backslash", "--kernel", "--kernel", "6.1\\x"),
    plan_case("kernel-empty", "--kernel", "--kernel="),
    plan_case("kernel-long", "--kernel", "--kernel", "6" * 200),
    # ip=, sha256, tmpfs options, boot mode
    plan_case("ip-three-fields", "--ip", "--ip", "1:2:3"),
    plan_case("ip-bad-address", "--ip", "--ip", "10.0.0.300:::255.255.255.0:n:eth0:none"),
    plan_case("ip-semicolon", "--ip", "--ip", "dhcp;reboot"),
    plan_case("ip-none-without-address", "--ip", "--ip", "eth0:none"),
    plan_case("ip-long", "--ip", "--ip", "dhcp" * 100),
    plan_case("sha256-short", "--sha256", "--sha256", "abc"),
    plan_case("sha256-65", "--sha256", "--sha256", "a" * 65),
    plan_case("tmpfs-opts-size", "--tmpfs-opts", "--tmpfs-opts", "size=1G"),
    plan_case("tmpfs-opts-uid", "--tmpfs-opts", "--tmpfs-opts", "uid=1000"),
    plan_case("tmpfs-opts-inodes-huge", "--tmpfs-opts", "--tmpfs-opts", "nr_inodes=" + "9" * 30),
    plan_case("boot-mode", "--boot", "--boot", "sometimes"),
    # plan files
    Case("plan-file-fifo", ["plan", "--root", "{T}", "--plan", "{W}/fifo"], 2, "is a FIFO", setup=fifo("{W}/fifo")),
    Case("plan-file-zero", ["plan", "--root", "{T}", "--plan", "/dev/zero"], 2, "a character device"),
    Case("plan-file-dir", ["plan", "--root", "{T}", "--plan", "{W}"], 2, "is a directory"),
    Case(
        "plan-file-binary",
        ["plan", "--root", "{T}", "--plan", "{W}/p"],
        2,
        "not UTF-8",
        setup=write("{W}/p", b"\xff\xfe\x00garbage"),
    ),
    Case(
        "plan-file-huge",
        ["plan", "--root", "{T}", "--plan", "{W}/p"],
        2,
        "larger than",
        setup=write("{W}/p", "# " + "x" * (2 << 20)),
    ),
    Case(
        "plan-file-not-toml",
        ["plan", "--root", "{T}", "--plan", "{W}/p"],
        2,
        "not valid TOML",
        setup=write("{W}/p", "source = ["),
    ),
    Case(
        "plan-file-unknown-key",
        ["plan", "--root", "{T}", "--plan", "{W}/p"],
        2,
        "unknown key",
        setup=write("{W}/p", '"\\u001b[2Jkey" = 1\n'),
    ),
    Case(
        "plan-file-wrong-type",
        ["plan", "--root", "{T}", "--plan", "{W}/p"],
        2,
        "must be",
        setup=write("{W}/p", "kernels = 'x'\n"),
    ),
    Case("plan-file-empty-path", ["plan", "--root", "{T}", "--plan="], 2, "--plan"),
    Case("plan-file-missing", ["plan", "--root", "{T}", "--plan", "{W}/absent"], 2, "cannot be read"),
    Case(
        "plan-file-link-to-fifo",
        ["apply", "--root", "{T}", "--plan", "{W}/p", "--yes"],
        2,
        "is a FIFO",
        setup=both(fifo("{W}/fifo"), lambda w: os.symlink(w.tmp / "fifo", w.tmp / "p")),
    ),
    Case(
        "plan-file-hostile-title",
        ["plan", "--root", "{T}", "--plan", "{W}/p"],
        2,
        "--title",
        setup=write("{W}/p", 'source = "nfs:h:/x"\nimage = "r.tar"\ntitle = "a\\nmenuentry"\n'),
    ),
    Case(
        "plan-file-injected-append",
        ["apply", "--root", "{T}", "--plan", "{W}/p", "--yes"],
        2,
        "--append",
        setup=write("{W}/p", 'source = "nfs:h:/x"\nimage = "r.tar"\nappend = "x\' --unrestricted {"\n'),
    ),
    # where a plan is saved
    Case("save-empty", ["plan", "--root", "{T}", *BASE, "--save="], 2, "--save"),
    Case("save-dir", ["plan", "--root", "{T}", *BASE, "--save", "{W}"], 2, "is a directory"),
    Case("save-device", ["plan", "--root", "{T}", *BASE, "--save", "{C}/null"], 2, "character device"),
    Case("save-fifo", ["plan", "--root", "{T}", *BASE, "--save", "{W}/fifo"], 2, "is a FIFO", setup=fifo("{W}/fifo")),
    Case(
        "save-link",
        ["plan", "--root", "{T}", *BASE, "--save", "{W}/l"],
        2,
        "symbolic link",
        setup=lambda w: os.symlink(w.canary / "victim", w.tmp / "l"),
    ),
    Case("save-no-dir", ["plan", "--root", "{T}", *BASE, "--save", "{W}/absent/p.toml"], 2, "does not exist"),
    Case("save-trailing-slash", ["plan", "--root", "{T}", *BASE, "--save", "{W}/p/"], 2, "--save"),
    # image inspect
    Case("inspect-fifo", ["image", "inspect", "{W}/fifo"], 2, "is a FIFO", setup=fifo("{W}/fifo")),
    Case("inspect-zero", ["image", "inspect", "/dev/zero"], 2, "character device"),
    Case("inspect-dir", ["image", "inspect", "{W}"], 2, "is a directory"),
    Case("inspect-missing", ["image", "inspect", "{W}/absent"], 2, "cannot be read"),
    Case("inspect-empty-file", ["image", "inspect", "{W}/e"], 2, "not an archive", setup=write("{W}/e", b"")),
    Case("inspect-text", ["image", "inspect", "{W}/t"], 2, "not an archive", setup=write("{W}/t", "hello\n")),
    Case(
        "inspect-dotdot-member",
        ["image", "inspect", "{W}/a.tar"],
        2,
        "contains '..'",
        setup=write("{W}/a.tar", archive(GOOD_TREE + [("./../evil", "file", "x")])),
    ),
    Case(
        "inspect-through-link",
        ["image", "inspect", "{W}/a.tar"],
        2,
        "through the symbolic link",
        setup=write("{W}/a.tar", archive(GOOD_TREE + [("./x", "sym", "/etc"), ("./x/passwd", "file", "r")])),
    ),
    Case(
        "inspect-absolute-member",
        ["image", "inspect", "{W}/a.tar"],
        0,
        "absolute name",
        setup=write("{W}/a.tar", archive(GOOD_TREE + [("/etc/hostname", "file", "h")])),
    ),
    Case(
        "inspect-no-members",
        ["image", "inspect", "{W}/a.tar"],
        2,
        "not an archive",
        setup=write("{W}/a.tar", archive([])),
    ),
    Case(
        "inspect-gzip-of-nothing",
        ["image", "inspect", "{W}/a.tar.gz"],
        2,
        "holds no files",
        setup=write("{W}/a.tar.gz", __import__("gzip").compress(archive([]), mtime=0)),
    ),
    Case(
        "inspect-truncated",
        ["image", "inspect", "{W}/a.tar"],
        2,
        "truncated",
        setup=write("{W}/a.tar", archive(GOOD_TREE + [("./big", "file", "y" * 100000)])[:20000]),
    ),
    Case("inspect-name-escape", ["image", "inspect", "/nonexistent/\x1b[2Jx"], 2, "\\x1b[2Jx"),
    # image create
    Case(
        "create-exclude-everything",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/o.tar.zst", "--exclude", "*"],
        2,
        "nothing to pack",
        setup=write("{W}/tree/etc/os-release", "ID=x\n"),
    ),
    Case(
        "create-output-device",
        ["image", "create", "--from", "{W}/tree", "--output", "{C}/null", "--yes"],
        2,
        "character device",
        setup=write("{W}/tree/etc/os-release", "ID=x\n"),
    ),
    Case(
        "create-output-fifo",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/fifo", "--yes"],
        2,
        "is a FIFO",
        setup=both(write("{W}/tree/etc/os-release", "ID=x\n"), fifo("{W}/fifo")),
    ),
    Case(
        "create-output-dir",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/tree"],
        2,
        "is a directory",
        setup=write("{W}/tree/etc/os-release", "ID=x\n"),
    ),
    Case(
        "create-output-link",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/l", "--yes"],
        2,
        "symbolic link",
        setup=both(write("{W}/tree/etc/os-release", "ID=x\n"), lambda w: os.symlink(w.canary / "victim", w.tmp / "l")),
    ),
    Case(
        "create-sha256-beside-is-device",
        ["image", "create", "--from", "{W}/tree", "--output", "{C}/o"],
        2,
        "character device",
        setup=both(
            write("{W}/tree/etc/os-release", "ID=x\n"),
            lambda w: os.mknod(w.canary / "o.sha256", 0o600 | 0o020000, os.makedev(1, 3)),
        ),
    ),
    Case(
        "create-output-empty",
        ["image", "create", "--from", "{W}/tree", "--output="],
        2,
        "--output",
        setup=write("{W}/tree/etc/os-release", "ID=x\n"),
    ),
    Case("create-from-missing", ["image", "create", "--from", "{W}/absent", "--output", "{W}/o.tar"], 2, "--from"),
    Case("create-format", ["image", "create", "--from", "{W}", "--output", "{W}/o", "--format", "rar"], 2, "--format"),
    Case("create-level", ["image", "create", "--from", "{W}", "--output", "{W}/o", "--level", "99"], 2, "--level"),
    Case(
        "create-with-mount",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/o.tar.zst", "--with-mount", "/nowhere"],
        2,
        "--with-mount",
        setup=write("{W}/tree/etc/os-release", "ID=x\n"),
    ),
    Case(
        "create-output-beside-other-files-in-the-tree",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/tree/out/o.tar.zst"],
        2,
        "is inside the tree packed, in '/out', which holds 1 other entry (e.g. '.keep')",
        setup=both(write("{W}/tree/etc/os-release", "ID=x\n"), write("{W}/tree/out/.keep", "")),
        check=lambda w, r: not (w.tmp / "tree/out/o.tar.zst").exists(),
    ),
    Case(
        "create-planted-partial",
        ["image", "create", "--from", "{W}/tree", "--output", "{W}/tree/out/o.tar.zst", "--exclude", "/out/*"],
        0,
        "pin",
        setup=both(
            write("{W}/tree/etc/os-release", "ID=x\n"),
            write("{W}/tree/out/.keep", ""),
            lambda w: os.symlink(w.canary / "victim", w.tmp / "tree/out/.o.tar.zst.partial"),
        ),
        check=lambda w, r: (w.tmp / "tree/out/o.tar.zst").stat().st_size > 0,
    ),
    # damaged or planted state in the target
    damaged(STATE, "{not json", ["status"], "state.json is damaged"),
    damaged(STATE, "{not json", ["remove", "--yes"], "state.json is damaged"),
    damaged(STATE, "{not json", ["apply", *BASE, "--yes"], "state.json is damaged"),
    damaged(STATE, b"\xff\xfe\x00", ["status"], "not UTF-8"),
    damaged(STATE, " " * (2 << 20), ["status"], "larger than"),
    damaged(STATE, "[1, 2]", ["remove", "--yes"], "not a JSON object"),
    damaged(STATE, '{"version": 99}', ["status"], "version '99'"),
    damaged(
        STATE,
        '{"version": 1, "boot": "once", "entry": "tmpfs-root-x", "kernels": [], "cmdline": [],'
        ' "initrds": {}, "default_before": null, "bootloader": {},'
        ' "files": {"/etc/shadow": null}}',
        ["status"],
        "'files'",
    ),
    damaged(
        STATE,
        '{"version": 1, "boot": "once", "entry": "tmpfs-root-x", "kernels": [], "cmdline": [],'
        ' "initrds": {}, "default_before": "a\\nnext_entry=evil", "bootloader": {}, "files": {}}',
        ["remove", "--yes"],
        "'default_before'",
    ),
    damaged(JOURNAL, '[{"path": "/home", "existed": false}]', ["remove", "--yes"], "which is not tmpfs-root's"),
    damaged(
        JOURNAL,
        '[{"path": "/etc/grub.d/42_tmpfs-root", "existed": true, "backup": "/etc/shadow"}]',
        ["apply", *BASE, "--yes"],
        "journal",
    ),
    damaged(JOURNAL, "garbage", ["status"], "journal"),
    Case(
        "journal-fifo-status", ["status", "--root", "{T}"], 1, "is a FIFO", setup=fifo("{T}/" + JOURNAL), installed=True
    ),
    Case(
        "state-dir-link-status",
        ["status", "--root", "{T}"],
        1,
        "symbolic link",
        setup=link("etc/tmpfs-root", "{C}"),
        installed=True,
    ),
    Case(
        "state-dir-link-apply",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "symbolic link",
        setup=link("etc/tmpfs-root", "{C}"),
    ),
    Case(
        "var-dir-link-apply",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "symbolic link",
        setup=link("var/lib/tmpfs-root", "{C}"),
    ),
    Case(
        "backup-link-to-root-apply",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "symbolic link",
        setup=link("var/lib/tmpfs-root/backup", "/"),
    ),
    Case(
        "backup-link-remove",
        ["remove", "--root", "{T}", "--yes"],
        1,
        "symbolic link",
        setup=link("var/lib/tmpfs-root/backup", "{C}"),
        installed=True,
    ),
    Case(
        "module-dir-link-apply",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "symbolic link",
        setup=link("usr/lib/dracut/modules.d/90tmpfs-root", "{C}"),
    ),
    Case(
        "state-file-is-dir",
        ["status", "--root", "{T}"],
        1,
        "is a directory",
        setup=lambda w: (w.target / STATE).unlink() or (w.target / STATE).mkdir(),
        installed=True,
    ),
    # layouts that lead out of the target: followed inside it, never out
    Case(
        "modules-d-escapes",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "leads nowhere",
        setup=link("usr/lib/dracut/modules.d", "../../../../../../../../canary"),
    ),
    Case(
        "grub-d-absolute-out",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "leads nowhere",
        setup=link("etc/grub.d", "{C}"),
    ),
    Case(
        "grub-cfg-link-out",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        0,
        "Applied to",
        setup=link("boot/grub/grub.cfg", "{C}/victim"),
        target_changes=True,
        check=lambda w, r: not (w.target / "boot/grub/grub.cfg").is_symlink(),
    ),
    Case(
        "hook-dir-up-links",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        0,
        "Applied to",
        setup=both(link("etc/kernel", "../../../../../../.."), lambda w: (w.target / "postinst.d").mkdir()),
        target_changes=True,
        check=lambda w, r: (w.target / "postinst.d/z50-tmpfs-root").is_file(),
    ),
    Case(
        "kernel-dir-with-quote",
        ["plan", "--root", "{T}", *BASE],
        0,
        FAKE_KVER,
        setup=lambda w: (w.target / "lib/modules/9.9'x").mkdir(),
        check=lambda w, r: "9.9'x" not in r.stdout,
    ),
    Case(
        "os-release-escapes",
        ["plan", "--root", "{T}", *BASE],
        0,
        "Entry title: Linux, root in RAM",
        setup=write("etc/os-release", 'PRETTY_NAME="\x1b[2J\x1b]0;x\x07Evil"\n'),
    ),
    Case(
        "lock-dir-not-private",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "not private to root",
        setup=lambda w: (os.mkdir(w.tmp / "lock"), os.chmod(w.tmp / "lock", 0o777)),
        tags=["lock"],
    ),
    Case(
        "lock-dir-link",
        ["apply", "--root", "{T}", *BASE, "--yes"],
        1,
        "symbolic link",
        setup=lambda w: os.symlink(w.canary, w.tmp / "lock"),
        tags=["lock"],
    ),
]


def test_there_are_over_a_hundred_cases():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"


@pytest.fixture
def world(tmp_path):
    target = make_tool_target(tmp_path / "target")
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "victim").write_text("precious\n")
    os.mknod(canary / "null", 0o666 | 0o020000, os.makedev(1, 3))
    work = tmp_path / "work"
    work.mkdir()
    return World(work, target, canary)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(world, case):
    env = {"TMPFS_ROOT_LOCK_DIR": str(world.tmp / "lock")}
    if case.installed:
        good = cli_inproc("apply", "--root", world.target, *BASE, "--yes", env=env)
        assert good.returncode == 0, good.stderr
    if case.setup:
        case.setup(world)
    canary_before = tree_digest(world.canary)
    target_before = tree_digest(world.target)
    result = cli_inproc(*[world.fmt(a) for a in case.argv], env=env, timeout=60)
    said = [line for line in result.stderr.splitlines() if line.startswith("tmpfs-root:")]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == case.code, result
    says = world.fmt(case.says)
    if case.code == 0:
        assert says in result.stdout + result.stderr, result
    else:
        assert len(said) == 1, said
        assert said[0].startswith(("tmpfs-root: error:", "tmpfs-root: attention:")), said
        assert says in said[0], said
        assert len(said[0]) < 1200 and "\x1b" not in said[0]
        assert tree_digest(world.target) == target_before, "refused, yet the target changed"
    if case.code == 0 and not case.target_changes:
        assert tree_digest(world.target) == target_before
    assert tree_digest(world.canary) == canary_before, "something outside the target changed"
    assert os.path.exists(world.canary / "null") and (world.canary / "victim").read_text() == "precious\n"
    if case.check:
        assert case.check(world, result) is not False


def test_other_users_can_neither_plant_nor_hold_the_lock(world, monkeypatch):
    """The per-target lock lives in a directory of root's alone: an unprivileged user can
    neither open a lock file there (to hold it and block every apply) nor plant a link; and
    the lock file goes when the transaction ends."""
    import subprocess
    import sys

    from tui.host import Host
    from tui.transaction import locked

    lock_dir = world.tmp / "lock"
    os.chmod(world.tmp, 0o755)
    monkeypatch.setenv("TMPFS_ROOT_LOCK_DIR", str(lock_dir))
    probe = (
        "import os, sys\n"
        "for what in (lambda: open(sys.argv[1], 'a'), lambda: os.symlink('/etc/passwd', sys.argv[2])):\n"
        "    try:\n        what()\n        print('allowed')\n"
        "    except PermissionError:\n        print('refused')\n"
    )
    with locked(Host(world.target)):  # as while an apply runs
        st = lock_dir.stat()
        assert st.st_uid == 0 and st.st_mode & 0o777 == 0o700
        (held,) = list(lock_dir.iterdir())
        out = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                probe,
                str(held),
                str(lock_dir / "planted"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.split() == ["refused", "refused"], out
    assert list(lock_dir.iterdir()) == []
