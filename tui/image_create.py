"""Packing a root filesystem into an image that boots on a tmpfs root.

``create`` packs a running or mounted root with GNU tar (numeric owners, modes,
hard links, sparse files, xattrs, ACLs, SELinux labels, file capabilities) and a
multi-threaded compressor. It never packs pseudo or volatile trees, the output
file or the folder of images; the image's /etc/fstab (never the host's) has the
entries for / and for the volume holding the images commented out. The archive
is written under a temporary name and renamed at the end, then FILE.sha256 (the whole
file's, for ``sha256sum -c``) and FILE.pin (what the boot pins: a sharded image's index's
sha256, else the same).

An image holds the tree's secrets (/etc/shadow, SSH host keys): it and its sidecar are
0600 unless ``--mode`` widens them (at most read for group and others), and the partial
file is created 0600, so nobody else can read it while it is written, whatever the umask.

A fleet image gives every node its own identity: with ``--generic`` (``generic=True``,
``CreatePlan.make_generic``) what must differ from host to host (PER_HOST: the machine ID,
the SSH host keys, the random seed, the credential key, DHCP leases) is left out, and
/etc/machine-id is packed empty, so an image made once and booted on many hosts does not
make them share any of it. It goes through the same two means as the fstab: exclusions, and
files packed from a staging folder in place of the tree's (``CreatePlan.staged``). The tree
is never changed. A node booted with root=tmpfs: makes its own SSH host keys before sshd
starts (the module's tmpfs-root-identity.sh).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tui.cancel import CancelToken
from tui.devices import human_size, parse_mountinfo
from tui.errors import BadInput, escape, shown
from tui.safefile import (
    FileRefused,
    check_output,
    create_exclusive,
    set_owner_and_mode,
    unlink_quietly,
    write_atomic,
)
from tui.tar_stream import CreateCancelled, CreateFailed, counting, scan_totals, stream

#: format -> (compressor argv with {level}, default level, accepted levels)
COMPRESSORS = {
    "zst": (["zstd", "-q", "-T0", "-{level}"], 3, range(1, 20)),
    "gz": (["pigz", "-{level}"], 6, range(1, 10)),
    "xz": (["xz", "-T0", "-{level}"], 6, range(0, 10)),
    "lz4": (["lz4", "-q", "-{level}"], 1, range(1, 13)),
    "tar": (None, None, range(0)),
}
#: zstd: about 3x faster to unpack than gzip at a smaller size (see the README's benchmark).
DEFAULT_FORMAT = "zst"
#: Contents never packed (the directories themselves are kept as mount points).
VOLATILE = ("proc", "sys", "dev", "run", "tmp")
#: Separate mounts that are part of the OS, packed without asking.
SYSTEM_MOUNTS = ("usr", "var")
#: Every shard of a sharded image is a tar stream of whole 160 KiB records: a multiple of the
#: A guess of the compressed share, to refuse early when the output's filesystem lacks room.
RATIO_GUESS = {"zst": 0.5, "gz": 0.55, "xz": 0.4, "lz4": 0.65, "tar": 1.0}
#: The suffixes an output of each format may end with (its name says what it is, to the
#: tools and people that go by names: tar -a, file managers, web servers' types).
SUFFIXES = {
    "zst": (".tar.zst", ".tzst", ".zst"),
    "gz": (".tar.gz", ".tgz", ".gz"),
    "xz": (".tar.xz", ".txz", ".xz"),
    "lz4": (".tar.lz4", ".lz4"),
    "tar": (".tar",),
}
#: Beside the image: FILE.sha256, the sha256 of the whole file as `sha256sum -c` checks it,
#: and FILE.pin, what the boot pins (rd.tmpfs.sha256, plan --sha256): for a sharded image
#: the sha256 of its index (which lists every shard's), else the same as FILE.sha256.
SUM_SUFFIX = ".sha256"
PIN_SUFFIX = ".pin"
FSTAB_NOTE = "# tmpfs-root: commented out in the image: / is a tmpfs unpacked at boot"
#: The image's and its sidecar's mode: root's alone, as the secrets packed in it are.
IMAGE_MODE = 0o600
#: The most --mode may give: read and write for the owner, read for group and others.
WIDEST_MODE = 0o644
#: What differs from host to host, so what --generic leaves out (anchored tar patterns), each
#: with why. /etc/machine-id is not left out but packed empty (MACHINE_ID).
PER_HOST = (
    (
        "./etc/machine-id",
        "packed empty, mode 0444: systemd makes a new one at each boot, where a missing one "
        "would make every boot a first boot",
    ),
    ("./var/lib/dbus/machine-id", "D-Bus's copy of the machine ID; a symbolic link to /etc/machine-id is kept"),
    ("./etc/ssh/ssh_host_*key", "SSH host keys: a node booted with root=tmpfs: makes its own before sshd starts"),
    ("./etc/ssh/ssh_host_*key.pub", "their public halves"),
    ("./var/lib/systemd/random-seed", "the kernel's random pool would start from the same seed on every node"),
    ("./var/lib/systemd/credential.secret", "the key of this host's encrypted service credentials"),
    ("./var/lib/dhcp/*", "DHCP leases: the nodes would ask for this host's address"),
)
#: The machine ID a --generic image holds: an empty file, read-only as systemd expects.
MACHINE_ID = ("etc/machine-id", "", 0o444)

Progress = Callable[[int, int, int, int], None]  # bytes done, bytes total, files done, files total


class CreateError(BadInput):
    """What was asked cannot be packed (an option at fault); one line for the user."""


@dataclass
class CreatePlan:
    source: Path
    output: Path
    format: str
    level: int | None
    excludes: list[str] = field(default_factory=list)  # tar patterns, anchored ones start with ./
    mounts: list[str] = field(default_factory=list)  # separate mounts packed (relative: usr, var, home)
    skipped_mounts: list[str] = field(default_factory=list)  # separate mounts left out
    fstab: str | None = None  # the image's rewritten /etc/fstab
    shards: int | None = None  # zst: shards of the sharded format (None: by size; 1: one stream)
    mode: int = IMAGE_MODE  # of the image, FILE.sha256 and FILE.pin (parse_mode: at most WIDEST_MODE)
    generic: bool = False  # --generic: what differs per host is left out (PER_HOST)
    per_host: list[str] = field(default_factory=list)  # what --generic leaves out of this tree (/etc/...)

    def sharded(self) -> bool:
        return self.format == "zst" and self.shards != 1

    def staged(self) -> list[tuple[str, str, int]]:
        """The files the image holds in place of the tree's (name, content, mode), written to
        the staging folder and packed from there: the rewritten /etc/fstab, and for --generic
        the empty /etc/machine-id."""
        files = [] if self.fstab is None else [("etc/fstab", self.fstab, 0o644)]
        return files + ([MACHINE_ID] if self.generic else [])

    def make_generic(self) -> None:
        """--generic: leave out what differs from host to host (PER_HOST) and pack an empty
        /etc/machine-id; *per_host* names what this tree holds of it. Raises CreateError."""
        if self.generic:
            return
        if not (self.source / "etc").is_dir():
            raise CreateError(f"--generic: {shown(str(self.source))} has no /etc; accepted: a root tree")
        self.generic = True
        for pattern, _ in PER_HOST:
            if pattern == "./var/lib/dbus/machine-id" and _links_to_machine_id(self.source / pattern):
                continue
            self.excludes.append(pattern)
            found = sorted(str(p.relative_to(self.source)) for p in self.source.glob(pattern[2:]))
            self.per_host += ["/" + f for f in found if f != MACHINE_ID[0]]

    def _staged_names(self, staging: Path) -> list[str]:
        names = [name for name, _, _ in self.staged()]
        return ["-C", str(staging.resolve()), *names] if names else []

    def _tar_common(self) -> list[str]:
        argv = ["tar", "--create", "--file=-", "--numeric-owner", "--sparse", "--xattrs", "--xattrs-include=*"]
        argv += ["--acls", "--verbose"]
        if _tar_supports("--selinux"):
            argv.append("--selinux")
        return argv

    def tar_argv(self, staging: Path) -> list[str]:
        """One stream: tar walks the tree itself."""
        argv = self._tar_common() + ["--one-file-system", "-C", str(self.source), "--anchored", "--wildcards"]
        argv += [f"--exclude={p}" for p in self.excludes if p.startswith("./")]
        argv += ["--no-anchored"] + [f"--exclude={p}" for p in self.excludes if not p.startswith("./")]
        argv += ["--anchored", "."] + [f"./{m}" for m in self.mounts]
        return argv + self._staged_names(staging)

    def part_tar_argv(self, listing: Path, staging: Path | None, record: int = 10240) -> list[str]:
        """One part of a sharded image: exactly the members named in *listing* (NUL-separated,
        as walk() found them; one that vanished since is a warning), then the staged files
        (the image's fstab, its empty machine ID) from *staging* when given; a tar stream of
        whole records of *record* bytes."""
        argv = self._tar_common() + ["--ignore-failed-read", "--no-recursion", "-C", str(self.source)]
        argv += [f"--blocking-factor={record // 512}"]
        argv += ["--null", "--verbatim-files-from", "-T", str(listing)]
        if staging is not None:
            argv += self._staged_names(staging)  # named as one stream names them
        return argv

    def compressor_argv(self) -> list[str] | None:
        template, default, _ = COMPRESSORS[self.format]
        if template is None:
            return None
        argv = [a.format(level=self.level if self.level is not None else default) for a in template]
        if argv[0] == "pigz" and not shutil.which("pigz"):
            argv[0] = "gzip"
        return argv


def _tar_supports(option: str) -> bool:
    try:
        return option in subprocess.run(["tar", "--help"], capture_output=True, text=True).stdout
    except OSError:
        return False


def make_plan(
    source: str,
    output: str,
    fmt: str = DEFAULT_FORMAT,
    level: int | None = None,
    excludes: list[str] | None = None,
    with_mounts: list[str] | None = None,
    mountinfo: str | None = None,
    shards: int | str | None = "auto",
    generic: bool = False,
) -> CreatePlan:
    """Decide what to pack (*generic*: --generic, see CreatePlan.make_generic); raises
    CreateError naming the option at fault."""
    # Resolved, both: the output's folder reached through a link into the tree (/images ->
    # srv/images) is still inside it, and what tar walks is named as tar walks it.
    src = Path(os.path.realpath(source))
    out = Path(os.path.realpath(os.path.dirname(os.path.abspath(output)))) / os.path.basename(output)
    if not src.is_dir():
        raise CreateError(f"--from {shown(source)}: is not a directory; accepted: / or a mounted root")
    if fmt not in COMPRESSORS:
        raise CreateError(f"--format {shown(fmt)}: accepted: {', '.join(COMPRESSORS)}")
    accepted = COMPRESSORS[fmt][2]
    if level is not None and level not in accepted:
        what = f"{accepted.start}-{accepted.stop - 1}" if len(accepted) else "none (tar is not compressed)"
        raise CreateError(f"--level {level}: accepted for {fmt}: {what}")
    if not output or output.endswith("/"):
        raise CreateError(f"--output {shown(output)}: accepted: a file name, e.g. rootfs.tar.{fmt}")
    if not all(ch.isprintable() for ch in os.path.basename(output)):
        # FILE.sha256 names it on one line, as sha256sum -c reads it
        raise CreateError(f"--output {shown(output)}: holds a control character; accepted: a printable file name")
    if not out.parent.is_dir():
        raise CreateError(f"--output {shown(output)}: directory {shown(str(out.parent))} does not exist")
    for path in (out, *(out.with_name(name) for name in sidecars(out.name))):
        try:
            check_output(path)
        except FileRefused as e:
            raise CreateError(f"--output {shown(output)}: {shown(str(path))} {e.strerror}") from None
    plan = CreatePlan(src, out, fmt, level, shards=_shard_count(shards, fmt))
    if not out.name.endswith(SUFFIXES[fmt]):
        raise CreateError(
            f"--output {shown(output)}: the name does not say {fmt}; accepted for --format {fmt}: "
            f"a name ending {', '.join(SUFFIXES[fmt])} (or the --format its suffix names)"
        )
    plan.excludes += [f"./{d}/*" for d in VOLATILE] + ["./etc/fstab"]
    for pattern in excludes or []:
        if not pattern or any(c in pattern for c in "\n\0"):
            raise CreateError(f"--exclude {shown(pattern)}: accepted: a tar pattern, e.g. /var/cache/apt/*")
        plan.excludes.append("./" + pattern.lstrip("/") if pattern.startswith("/") else pattern)
    plan.excludes += [f"./{p}" for p in _swap_files(src)]
    # Separate filesystems below the root: the OS's own are packed, others only when asked.
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    below = sorted(
        {
            mp
            for mps in parse_mountinfo(mountinfo).values()
            for mp in mps
            if mp != str(src) and mp.startswith(str(src).rstrip("/") + "/")
        }
    )
    wanted = {m.strip("/") for m in with_mounts or []}
    for mp in below:
        rel = os.path.relpath(mp, str(src))
        if rel.split("/")[0] in VOLATILE or any(
            rel == e[2:] or rel.startswith(e[2:].rstrip("*")) for e in plan.excludes if e.startswith("./")
        ):
            continue
        if rel in SYSTEM_MOUNTS or rel in wanted:
            plan.mounts.append(rel)
        else:
            plan.skipped_mounts.append(rel)
    for m in wanted - set(plan.mounts):
        raise CreateError(f"--with-mount {shown('/' + m)}: no filesystem is mounted there under {src}")
    _leave_out_the_output(plan, below)
    fstab = src / "etc/fstab"
    if fstab.is_file():
        plan.fstab = rewrite_fstab(
            fstab.read_text(errors="replace"), _images_mountpoint(src, out, below), images_volume_ids(out, mountinfo)
        )
    if generic:
        plan.make_generic()
    return plan


def sidecars(name: str) -> tuple[str, str]:
    """The names written beside an image called *name*: its sha256 and its pin."""
    return name + SUM_SUFFIX, name + PIN_SUFFIX


def _leave_out_the_output(plan: CreatePlan, below: list[str]) -> None:
    """The output, its sidecars and its partial files are never packed when they are inside
    the tree; nothing else is left out for them. When the folder they are in holds anything
    else that would be packed, it is refused: packing it would put other images (or whatever
    is there) into this one, and leaving it out whole would drop a directory unasked."""
    out, src = plan.output, plan.source
    try:
        folder = out.parent.relative_to(src)
    except ValueError:
        return
    own = [out.name, *sidecars(out.name)]
    prefix = "" if str(folder) == "." else f"{folder}/"
    plan.excludes += [f"./{prefix}{name}" for name in own] + [f"./{prefix}.{out.name[:180]}.*.partial"]
    if str(folder) == ".":
        return  # the root itself is never left out
    anchored = [e[2:] for e in plan.excludes if e.startswith("./")]
    floating = [e for e in plan.excludes if not e.startswith("./")]
    walked = {str(src)} | {str(src / m) for m in plan.mounts}
    mount = max((mp for mp in [str(src), *below] if out.parent.is_relative_to(mp)), key=len)
    parts = str(folder).split("/")
    if mount not in walked or any(_excluded("/".join(parts[:n]), anchored, floating) for n in range(1, len(parts) + 1)):
        return  # on a filesystem not packed, or left out by --exclude
    partial = re.compile(re.escape(f".{out.name[:180]}.") + r".*\.partial")
    others = sorted(
        name
        for name in os.listdir(out.parent)
        if name not in own and not partial.fullmatch(name) and not _excluded(f"{folder}/{name}", anchored, floating)
    )
    if others:
        raise CreateError(
            f"--output {shown(str(out))}: is inside the tree packed, in {shown('/' + str(folder))}, which holds "
            f"{len(others)} other entr{'y' if len(others) == 1 else 'ies'} (e.g. {shown(others[0])}) that would be "
            f"packed with it or the whole folder left out; accepted: an output outside --from, on a "
            f"filesystem not packed, or --exclude {shown('/' + str(folder) + '/*')} to leave that folder's contents out"
        )


def _links_to_machine_id(path: Path) -> bool:
    """Whether *path* (the tree's /var/lib/dbus/machine-id) is a symbolic link to
    /etc/machine-id, absolute or relative: it then names the node's own."""
    try:
        target = os.readlink(path)
    except OSError:
        return False
    return os.path.normpath(os.path.join("/var/lib/dbus", target)) == "/etc/machine-id"


def parse_mode(text: str) -> int:
    """--mode: 3 or 4 octal digits, at most read and write for the owner and read for group
    and others (no execute, setuid, setgid or sticky bit, nobody else may write)."""
    mode = int(text, 8) if re.fullmatch(r"[0-7]{3,4}", text) else -1
    if mode < 0 or mode & ~WIDEST_MODE:
        raise CreateError(
            f"--mode {shown(text)}: accepted: 3 or 4 octal digits of at most {WIDEST_MODE:04o} "
            f"(read for group and others; no write, execute, setuid, setgid or sticky bit), e.g. 0640"
        )
    return mode


def _shard_count(shards: int | str | None, fmt: str) -> int | None:
    """--shards: "auto" (None: decided by the tree's size), or 1 (one stream) to MAX_SHARDS;
    more than one only for zst."""
    from tui.image_shards import MAX_SHARDS

    if shards in (None, "auto"):
        return None if fmt == "zst" else 1
    try:
        count = int(str(shards), 10)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SHARDS:
        raise CreateError(f"--shards {shown(str(shards))}: accepted: auto, or 1 (one stream) to {MAX_SHARDS}")
    if count > 1 and fmt != "zst":
        raise CreateError(f"--shards {count}: accepted only with --format zst (or --shards 1)")
    return count


def _swap_files(src: Path) -> list[str]:
    """Swap files inside the tree, from /proc/swaps and the tree's own fstab."""
    found = []
    candidates = []
    try:
        candidates += [line.split()[0] for line in Path("/proc/swaps").read_text().splitlines()[1:]]
    except OSError:
        pass
    try:
        for line in (src / "etc/fstab").read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "swap" and fields[0].startswith("/"):
                candidates.append(str(src / fields[0].lstrip("/")))
    except OSError:
        pass
    for c in candidates:
        try:
            rel = Path(c).relative_to(src)
        except ValueError:
            continue
        if (src / rel).is_file():
            found.append(str(rel))
    return found


def _images_mountpoint(src: Path, out: Path, below: list[str]) -> str | None:
    """The mountpoint, as the tree's fstab names it, of the volume the image is written to."""
    best = None
    for mp in below:
        if out.is_relative_to(mp) and (best is None or len(mp) > len(best)):
            best = mp
    return "/" + os.path.relpath(best, src) if best else None


def images_volume_ids(out: Path, mountinfo: str, probe=None) -> set[str]:
    """The names an fstab may give the volume the image is written to, wherever it is mounted
    (below the packed tree or not): its device, and UUID=, LABEL=, PARTUUID=, PARTLABEL= (as
    blkid reads them from the device) with their /dev/disk links."""
    from tui.devices import blkid_probe

    probe = probe or blkid_probe
    try:
        st = os.stat(out.parent)
    except OSError:
        return set()
    key = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    source = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] == key and "-" in fields:
            source = fields[fields.index("-") + 2]
    if not source or not source.startswith("/dev/"):
        return set()
    ids = {source}
    found = probe(source)
    for key, link in (
        ("UUID", "by-uuid"),
        ("LABEL", "by-label"),
        ("PARTUUID", "by-partuuid"),
        ("PARTLABEL", "by-partlabel"),
    ):
        value = found.get("PART_ENTRY_UUID" if key == "PARTUUID" else "PART_ENTRY_NAME" if key == "PARTLABEL" else key)
        if value:
            ids |= {f"{key}={value}", f"/dev/disk/{link}/{value}"}
    return ids


def rewrite_fstab(text: str, images_mountpoint: str | None, images_ids: set[str] | None = None) -> str:
    """Comment out the entries for / and for the images' volume (at its mountpoint in the tree,
    or named by its device or identifiers), with a note."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            mountpoint = fields[1].rstrip("/") or "/"
            if (
                mountpoint == "/"
                or (images_mountpoint and mountpoint == images_mountpoint.rstrip("/"))
                or fields[0] in (images_ids or set())
            ):
                why = "/ is a tmpfs unpacked at boot" if mountpoint == "/" else "the volume holding the root image"
                out.append(f"# tmpfs-root: commented out in the image ({why}):")
                out.append("#" + line)
                continue
        out.append(line)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Entry:
    """One member to pack: its name as tar stores it (./etc/passwd), whether it is a
    directory, its weight (bytes it stores plus a header), and for a file with other hard
    links the (device, inode) that groups them."""

    name: str
    is_dir: bool
    weight: int
    link: tuple[int, int] | None = None
    symlink: bool = False


def walk(plan: CreatePlan) -> Iterator[Entry]:
    """The members tar packs for *plan* (the root itself first), in a stable order: what
    --exclude, the volatile trees and other filesystems leave out is not there; sockets,
    which tar ignores, neither."""
    anchored = [e[2:] for e in plan.excludes if e.startswith("./")]
    floating = [e for e in plan.excludes if not e.startswith("./")]
    yield Entry(".", True, 512)
    for root in [plan.source] + [plan.source / m for m in plan.mounts]:
        dev = root.lstat().st_dev
        if root != plan.source:
            yield Entry("./" + os.path.relpath(root, plan.source), True, 512)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, plan.source)
            keep = []
            for d in dirnames:
                p = os.path.join(dirpath, d)
                rel = os.path.normpath(os.path.join(rel_dir, d))
                if _excluded(rel, anchored, floating) or rel in plan.mounts:
                    continue  # a packed mount's own directory comes with its walk
                if os.path.islink(p):  # os.walk lists a link to a directory among them
                    yield Entry("./" + rel, False, 512, symlink=True)
                    continue
                yield Entry("./" + rel, True, 512)
                if os.path.ismount(p) or os.lstat(p).st_dev != dev:
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if _excluded(rel, anchored, floating):
                    continue
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISSOCK(st.st_mode):
                    continue
                link = (st.st_dev, st.st_ino) if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) else None
                weight = min(st.st_size, st.st_blocks * 512) + 512
                yield Entry("./" + rel, False, weight, link, symlink=stat.S_ISLNK(st.st_mode))


def scan(plan: CreatePlan) -> tuple[int, int]:
    """Bytes and entries that will be packed (the root itself aside), for progress, the
    room check and the refusal of an empty image."""
    return scan_totals(walk(plan))


def _excluded(rel: str, anchored: list[str], floating: tuple[str, ...] | list[str] = ()) -> bool:
    """Whether tar leaves *rel* out: an anchored pattern matches the whole path, a floating
    one (tar's --no-anchored) any tail of it after a '/'."""
    import fnmatch

    if any(fnmatch.fnmatchcase(rel, pat) for pat in anchored):
        return True
    parts = rel.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(t, pat) for pat in floating for t in tails)


@dataclass
class Created:
    path: str
    size: int
    sha256: str  # of the whole file: what FILE.sha256 holds, as sha256sum -c checks it
    files: int
    warnings: list[str]
    #: partial files of earlier, interrupted runs that this one removed (sweep_partials)
    removed: list[str] = field(default_factory=list)
    #: what the boot pins (FILE.pin): a sharded image's index's sha256, else sha256
    pin: str = ""

    def sums(self) -> list[str]:
        """Which hash is which, a line each, ready to show."""
        name = escape(os.path.basename(self.path))
        lines = [f"sha256 {self.sha256} of the whole file (in {name}{SUM_SUFFIX}: sha256sum -c checks it)"]
        if self.pin == self.sha256:
            return lines + [f"pin    the same, for the boot (in {name}{PIN_SUFFIX}: plan --sha256, rd.tmpfs.sha256)"]
        return lines + [
            f"pin    {self.pin} of the index, which lists every shard's sha256, for the boot "
            f"(in {name}{PIN_SUFFIX}: plan --sha256, rd.tmpfs.sha256)"
        ]

    def notes(self, most: int = 20) -> list[str]:
        """What the admin is told beside the result, a line each, ready to show (names in
        them escaped once): the partial files removed, then tar's first *most* warnings and
        how many more there were."""
        lines = [f"note: {line}" for line in self.removed]  # sweep_partials shows its names
        lines += [f"warning: tar: {escape(w)}" for w in self.warnings[:most]]
        if len(self.warnings) > most:
            lines.append(f"warning: tar: {len(self.warnings) - most} more warnings")
        return lines


def create(plan: CreatePlan, progress: Progress | None = None, cancel: CancelToken | None = None) -> Created:
    """Pack *plan* into its output; a failure or interruption leaves nothing at the output name.

    The archive is written to a new file beside the output, created exclusively under an
    unpredictable name (``.NAME.XXXXXXXXXXXX.partial``), then renamed. *cancel* stops tar
    and the compressor at once (CreateCancelled)."""
    entries = list(walk(plan))
    total_bytes, total_files = scan_totals(entries)
    if total_files == 0:
        raise CreateError(
            f"--from {shown(str(plan.source))}: nothing to pack (everything is left out "
            "by --exclude or is not on the root's filesystem); accepted: a root tree"
        )
    dir_fd = os.open(plan.output.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Before the room is counted: what a killed run left takes room too.
        swept = sweep_partials(plan.output.name, dir_fd)
        free = shutil.disk_usage(plan.output.parent).free
        needed = int(total_bytes * RATIO_GUESS[plan.format])
        if needed > free:
            raise CreateError(
                f"--output {shown(str(plan.output))}: the image needs about "
                f"{human_size(needed)}, only {human_size(free)} free on {plan.output.parent}"
            )
        # 0600 from its creation (a umask only narrows it): unreadable by others while written.
        fd, tmp = create_exclusive(plan.output.name, dir_fd=dir_fd, mode=0o600, suffix=".partial")
        try:
            # Held while this run (and the tar and compressor it starts) lives: the mark that
            # the file is being written, which a later run's sweep_partials respects.
            fcntl.flock(fd, fcntl.LOCK_EX)
            with tempfile.TemporaryDirectory(prefix="tmpfs-root-image-") as staging:
                for name, content, mode in plan.staged():
                    (Path(staging) / name).parent.mkdir(exist_ok=True)
                    (Path(staging) / name).write_text(content)
                    (Path(staging) / name).chmod(mode)
                written = os.dup(fd)  # hashed and identified through what was written, not by name
                with os.fdopen(fd, "wb") as out:
                    if plan.sharded():
                        from tui import image_shards

                        count = plan.shards or image_shards.auto_shards(total_bytes)
                        files, warnings, pin = image_shards.pack(
                            plan, Path(staging), out, entries, count, progress, cancel
                        )
                    else:
                        files, warnings = _pack(plan, Path(staging), out, total_bytes, total_files, progress, cancel)
                        pin = ""
                    out.flush()
                    set_owner_and_mode(out.fileno(), plan.mode)  # complete: given its mode
                    os.fsync(out.fileno())
            if files - 1 - len(plan.staged()) <= 0:
                raise CreateError(
                    f"--from {shown(str(plan.source))}: the image would hold no files "
                    "(everything is left out by --exclude); accepted: a root tree"
                )
            # The whole file's, as sha256sum reads it (a sharded image's pin is its index's),
            # read through the descriptor tar's stream went into: another file put at the
            # partial name (a folder others may write in) is never the one hashed.
            digest = hashlib.sha256()
            # (the descriptor was opened for writing: the same file is opened for reading
            # through it, by its /proc/self/fd entry, which names the inode, not the path)
            with open(os.open(f"/proc/self/fd/{written}", os.O_RDONLY | os.O_CLOEXEC), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    if cancel and cancel.cancelled:
                        raise CreateCancelled("image create was cancelled; nothing was written")
                    digest.update(chunk)
            sha = digest.hexdigest()
            pin = pin if plan.sharded() else sha
            # No sidecar of an earlier image is left beside the new one, even if this run dies
            # before it writes its own.
            for name in sidecars(plan.output.name):
                unlink_quietly(name, dir_fd=dir_fd)
            _same_file(written, tmp, dir_fd, plan)
            os.rename(tmp, plan.output.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
            tmp = plan.output.name  # from here, what a failure removes
            _same_file(written, tmp, dir_fd, plan)
        except BaseException:
            unlink_quietly(tmp, dir_fd=dir_fd)
            raise
        finally:
            with contextlib.suppress(NameError, OSError):
                os.close(written)
        sum_name, pin_name = sidecars(plan.output.name)
        write_atomic(sum_name, f"{sha}  {plan.output.name}\n".encode(), plan.mode, dir_fd=dir_fd)
        write_atomic(pin_name, f"{pin}\n".encode(), plan.mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return Created(str(plan.output), plan.output.stat().st_size, sha, files, warnings, swept, pin=pin)


def _same_file(fd: int, name: str, dir_fd: int, plan: CreatePlan) -> None:
    """Refuse when *name* (in *dir_fd*) is not the file open as *fd*: someone replaced it
    while it was written (a folder others may write in)."""
    mine, there = os.fstat(fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
        raise CreateFailed(
            f"--output {shown(str(plan.output))}: the file being written was replaced by another "
            f"while it was written (its folder is writable by others?); nothing was kept"
        )


#: How old a partial file must be before a later run removes it; a younger one may have
#: been created by a run that has not locked it yet (the lock follows the creation).
PARTIAL_MIN_AGE = 60


def sweep_partials(name: str, dir_fd: int) -> list[str]:
    """Remove the partial files of *name* (in *dir_fd*) that an interrupted ``create`` left
    behind (a SIGKILL, a power cut: nothing ran to remove them), and say so, one line each.

    Only regular files named as ``create`` names them, owned by this user, unchanged for
    PARTIAL_MIN_AGE seconds and not locked: a run still writing one holds its lock, and its
    file is kept."""
    pattern = re.compile(re.escape(f".{name[:180]}.") + r"[0-9a-f]{12}\.partial")
    said = []
    for entry in sorted(os.listdir(dir_fd)):
        if not pattern.fullmatch(entry):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue  # a symbolic link, gone, or not ours to read: not touched
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if time.time() - st.st_mtime < PARTIAL_MIN_AGE:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a run is writing it
            now = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue  # replaced since it was opened
            os.unlink(entry, dir_fd=dir_fd)
            said.append(
                f"removed {shown(entry)} ({human_size(st.st_size)}) beside the output, "
                "left by an interrupted image create"
            )
        finally:
            os.close(fd)
    return said


def _pack(
    plan: CreatePlan,
    staging: Path,
    out,
    total_bytes: int,
    total_files: int,
    progress: Progress | None,
    cancel: CancelToken | None,
) -> tuple[int, list[str]]:
    """One tar stream of the whole tree through one compressor, then the size trailer."""
    streamed = stream(
        plan, plan.tar_argv(staging), plan.compressor_argv(), out, cancel, counting(progress, total_bytes, total_files)
    )
    trailer = size_trailer(plan.format, streamed.bytes)
    if trailer:  # after what the compressor wrote through the same file
        out.flush()
        os.lseek(out.fileno(), 0, os.SEEK_END)
        os.write(out.fileno(), trailer)
    return streamed.files, streamed.warnings


#: The mark of the size trailer, in the boot's words (tr_recorded_size in tmpfs-root-img-lib.sh).
SIZE_MARK = b"tmpfs-root-size="


def size_trailer(fmt: str, size: int) -> bytes:
    """What records the uncompressed size at the end of an image, where the boot reads it
    (the formats that do not record it themselves, or not reliably):

    * zst, lz4: a skippable frame (magic 0x184D2A5E), which both decompressors skip;
    * gz: an empty gzip member whose comment holds it (ISIZE is the size modulo 4 GiB);
    * xz records it in its index, tar is its own size: nothing."""
    text = SIZE_MARK + str(size).encode()
    if fmt in ("zst", "lz4"):
        return struct.pack("<II", 0x184D2A5E, len(text)) + text
    if fmt == "gz":
        header = b"\x1f\x8b\x08\x10" + b"\0\0\0\0" + b"\0\xff" + text + b"\0"  # FCOMMENT, no mtime
        return header + b"\x03\x00" + struct.pack("<II", 0, 0)  # an empty deflate block, CRC32 0, size 0
    return b""


#: After this many seconds with nothing taken, the pace says so.
STALL_SAID = 4


class Pace:
    """Rate and time left of packing, true while nothing moves: the rate is over the last
    WINDOW seconds up to now, so a stalled compressor lowers it and the time left grows
    (a rate over the samples that moved would stay frozen at its last value)."""

    WINDOW = 20.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()
        self.done = self.total = 0
        self.moved = clock()
        self._lock = threading.Lock()

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        with self._lock:
            if not self.samples or done > self.done:
                self.moved = now
            self.done, self.total = done, total
            self.samples.append((now, done))
            while len(self.samples) > 1 and self.samples[1][0] <= now - self.WINDOW:
                self.samples.popleft()

    def rate(self) -> float | None:
        """Bytes a second over the window ending now; None before a second has passed."""
        now = self.clock()
        with self._lock:
            if not self.samples:
                return None
            t0, d0 = self.samples[0]
            if now - t0 < 1:
                return None
            return (self.done - d0) / (now - t0)

    def left(self) -> float | None:
        """Seconds left at the current rate; None when unknown (no rate yet, nothing moving,
        or everything read while the compressor still works on what it holds)."""
        rate = self.rate()
        if not rate or self.done >= self.total:
            return None
        return (self.total - self.done) / rate

    def text(self) -> str:
        rate, left = self.rate(), self.left()
        if rate is None:
            return "rate: measuring"
        still = self.clock() - self.moved
        parts = [f"{human_size(int(rate))}/s"]
        if self.done >= self.total:
            parts.append("compressing the rest")
        elif left is not None:
            parts.append(f"{int(left) // 60}:{int(left) % 60:02} left")
        else:
            parts.append("time left unknown")
        if still >= STALL_SAID:
            parts.append(f"the compressor has taken nothing for {int(still)} s")
        return ", ".join(parts)
