"""Block-device discovery with pyudev, and the identifiers a device can be named by.

Every block device that can hold a root image is listed: disks, partitions,
LVM logical volumes, md RAID arrays and loop devices that have a backing file.
ram, zram and unattached loop devices are skipped.  Filesystem properties come
from the udev database; where it lacks them (no udevd: containers, rescue
shells) they are filled from ``blkid -p -o export``; a mounted device whose
filesystem neither can read (a FUSE mount, a node this user cannot open) takes
its type from the mount table.  A device left without a filesystem says why, in
:attr:`BlockDevice.why_no_fs` (blkid's own error line, no udev data, …), which
:func:`no_filesystem` words for the CLI and the TUI alike.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field

from tui.errors import shown

#: Filesystem types that are containers, not filesystems an image can live on.
NOT_MOUNTABLE = {"swap", "LVM2_member", "linux_raid_member", "crypto_LUKS", "zfs_member", "bcache"}
SKIP_PREFIXES = ("ram", "zram")
#: Characters udev writes into a /dev/disk link literally (it escapes others as \\xNN).
_UDEV_SAFE = re.compile(r"[0-9A-Za-z._-]{1,128}")


@dataclass
class BlockDevice:
    name: str  # kernel name: sda1, nvme0n1p2, dm-0, md0, loop0p1
    path: str  # /dev/sda1, or /dev/mapper/vg-lv for device-mapper
    type: str  # disk, part, lvm, raid, loop, dm
    size: int  # bytes
    devnum: str = ""  # "major:minor"
    fstype: str | None = None
    label: str | None = None
    uuid: str | None = None
    partuuid: str | None = None
    partlabel: str | None = None
    model: str | None = None
    serial: str | None = None
    mountpoints: list[str] = field(default_factory=list)
    parent: str | None = None  # kernel name of the parent device
    lvm: str | None = None  # "vg/lv" for LVM logical volumes
    md_uuid: str | None = None  # for md RAID arrays
    links: list[str] = field(default_factory=list)  # /dev/disk/by-*/… symlinks
    origin: str = "udev"  # where the filesystem's identifiers come from: udev, or blkid (and why)
    why_no_fs: str | None = None  # when it shows no filesystem: why, in words (blkid's error, …)

    @property
    def usable(self) -> bool:
        """Has a filesystem an image can be stored on."""
        return bool(self.fstype) and self.fstype not in NOT_MOUNTABLE

    def identifiers(self) -> list[str]:
        """Every form of ``root=tmpfs:<source>`` that names this device."""
        forms = []
        if self.uuid:
            forms.append(f"UUID={self.uuid}")
        if self.partuuid:
            forms.append(f"PARTUUID={self.partuuid}")
        if self.label:
            forms.append(f"LABEL={self.label}")
        if self.partlabel:
            forms.append(f"PARTLABEL={self.partlabel}")
        forms.append(self.path)
        return forms

    def extra_args(self) -> list[str]:
        """Kernel arguments the initramfs needs to bring this device up."""
        args = []
        if self.lvm:
            args.append(f"rd.lvm.lv={self.lvm}")
        if self.md_uuid:
            args.append(f"rd.md.uuid={self.md_uuid}")
        return args

    def stable_name(self) -> str:
        """A name of this device that stays the same across boots and machines (for dracut's
        --add-device, which the kernel hook repeats later): its /dev/disk/by-uuid link, else
        by-partuuid; an LV's or array's own name; else the by-uuid (by-partuuid) name udev
        gives it on the target even where no udevd made that link here (a rescue system, a
        container preparing a disk); else by-id, by-path, else its path."""
        for kind in ("by-uuid", "by-partuuid"):
            for link in self.links:
                if link.startswith(f"/dev/disk/{kind}/"):
                    return link
        if self.path.startswith(("/dev/mapper/", "/dev/md/")):
            return self.path
        if self.uuid and _UDEV_SAFE.fullmatch(self.uuid):
            return f"/dev/disk/by-uuid/{self.uuid}"
        if self.partuuid and _UDEV_SAFE.fullmatch(self.partuuid):
            return f"/dev/disk/by-partuuid/{self.partuuid}"
        for kind in ("by-id", "by-path"):
            for link in self.links:
                if link.startswith(f"/dev/disk/{kind}/"):
                    return link
        return self.path

    def to_json(self, devices: list[BlockDevice] | None = None) -> dict:
        data = asdict(self)
        data["usable"] = self.usable
        data["why_no_fs"] = no_filesystem(self)  # the words the table and the TUI show
        data["identifiers"] = self.identifiers()
        if devices is not None:
            data["recommended"] = recommended_identifier(self, devices)
            data["extra_args"] = self.extra_args()
        return data


def recommended_identifier(dev: BlockDevice, devices: list[BlockDevice]) -> str:
    """UUID, else PARTUUID, else a LABEL/PARTLABEL only if unique, else the path."""
    if dev.uuid:
        return f"UUID={dev.uuid}"
    if dev.partuuid:
        return f"PARTUUID={dev.partuuid}"
    if dev.label and sum(1 for d in devices if d.label == dev.label) == 1:
        return f"LABEL={dev.label}"
    if dev.partlabel and sum(1 for d in devices if d.partlabel == dev.partlabel) == 1:
        return f"PARTLABEL={dev.partlabel}"
    return dev.path


def device_tree(devices: list[BlockDevice]) -> list[tuple[BlockDevice, int]]:
    """Devices in tree order, each disk followed by its partitions and volumes, with depth."""
    by_parent: dict[str | None, list[BlockDevice]] = {}
    names = {d.name for d in devices}
    for d in devices:
        by_parent.setdefault(d.parent if d.parent in names else None, []).append(d)
    rows: list[tuple[BlockDevice, int]] = []

    def walk(parent: str | None, depth: int) -> None:
        for d in sorted(by_parent.get(parent, []), key=lambda d: _natural(d.name)):
            rows.append((d, depth))
            walk(d.name, depth + 1)

    walk(None, 0)
    return rows


def identifier_choices(dev: BlockDevice, devices: list[BlockDevice]) -> list[tuple[str, str]]:
    """(label, identifier) for each form naming *dev*: the recommended one first, ambiguous
    ones flagged with how many devices they name."""
    recommended = recommended_identifier(dev, devices)
    choices = []
    for ident in dev.identifiers():
        n = len(match_source(ident, devices))
        note = " (recommended)" if ident == recommended else (f"  ! ambiguous: {n} devices" if n > 1 else "")
        choices.append((ident + note, ident))
    choices.sort(key=lambda c: c[1] != recommended)
    return choices


def match_source(source: str, devices: list[BlockDevice]) -> list[BlockDevice]:
    """The devices a ``<source>`` identifier names (may be none, one or several)."""
    key, sep, value = source.partition("=")
    if sep and key in ("UUID", "PARTUUID"):
        value = value.lower()
        attr = key.lower()
        return [d for d in devices if (getattr(d, attr) or "").lower() == value]
    if sep and key in ("LABEL", "PARTLABEL"):
        attr = key.lower()
        return [d for d in devices if getattr(d, attr) == value]
    if source.startswith("/dev/"):
        real = os.path.realpath(source) if os.path.exists(source) else source
        return [
            d
            for d in devices
            if source == d.path or source in d.links or real == f"/dev/{d.name}" or source in lvm_paths(d)
        ]
    return []


def lvm_paths(dev: BlockDevice) -> list[str]:
    """The usual names of an LVM logical volume: /dev/vg/lv and /dev/mapper/vg-lv."""
    if not dev.lvm:
        return []
    vg, _, lv = dev.lvm.partition("/")
    return [f"/dev/{vg}/{lv}", f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}"]


def lvm_from_path(path: str) -> str | None:
    """``vg/lv`` for a /dev/mapper/vg-lv path (with dm's ``--`` escaping), else None."""
    m = re.fullmatch(r"/dev/mapper/((?:[^-]|--)+)-((?:[^-]|--)+)", path)
    if not m:
        return None
    return f"{m.group(1).replace('--', '-')}/{m.group(2).replace('--', '-')}"


# --------------------------------------------------------------------- discovery
def _mount_entries(text: str):
    """(major:minor, mount source, mountpoint, filesystem type) of each line of /proc/self/mountinfo."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        sep = fields.index("-")
        yield fields[2], _unescape_mount(fields[sep + 2]), _unescape_mount(fields[4]), _unescape_mount(fields[sep + 1])


def parse_mountinfo(text: str) -> dict[str, list[str]]:
    """Map "major:minor" and the mount source to mountpoints, from /proc/self/mountinfo."""
    result: dict[str, list[str]] = {}
    for devnum, source, mountpoint, _ in _mount_entries(text):
        for key in (devnum, source):
            result.setdefault(key, [])
            if mountpoint not in result[key]:
                result[key].append(mountpoint)
    return result


def mount_types(text: str) -> dict[str, str]:
    """Map "major:minor" and the mount source to the filesystem type the mount table gives
    (the first mount of each), from /proc/self/mountinfo."""
    result: dict[str, str] = {}
    for devnum, source, _, fstype in _mount_entries(text):
        for key in (devnum, source):
            result.setdefault(key, fstype)
    return result


def _unescape_mount(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def blkid_probe(devnode: str) -> dict[str, str]:
    """Low-level probe of one device, for when udev's database lacks it."""
    return blkid_probe_why(devnode)[0]


def blkid_probe_why(devnode: str) -> tuple[dict[str, str], str | None]:
    """What ``blkid -p`` reads on one device, and, when it read nothing, why in words (its own
    error line, or that it found no signature)."""
    try:
        r = subprocess.run(
            ["blkid", "-p", "-o", "export", devnode], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return {}, "blkid: no answer within 30 s"
    except OSError as e:
        return {}, f"blkid cannot be run: {e.strerror}"
    props = {}
    for line in r.stdout.splitlines():
        try:  # blkid escapes what a shell would split on ("a\ b" for a label "a b")
            (word,) = shlex.split(line)
        except ValueError:
            continue
        key, sep, value = word.partition("=")
        if sep:
            props[key] = value
    error = [line.strip() for line in r.stderr.splitlines() if line.strip()]
    if props:
        return props, None
    if error:  # "blkid: error: /dev/sdb: Permission denied"
        return props, f"blkid: {shown(error[-1].removeprefix('blkid: '), 200)}"
    if r.returncode == 2:  # nothing found, and blkid says no more: was there anything to read?
        try:
            os.close(os.open(devnode, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError as e:
            return props, f"not readable: {e.strerror}"
        return props, None  # read, and no signature: the caller says so, knowing what else was asked
    return props, f"blkid: exit status {r.returncode}" + (
        " (several signatures: ambivalent)" if r.returncode == 8 else ""
    )


def _decode_udev(value: str | None) -> str | None:
    """udev's *_ENC values escape bytes as \\xNN."""
    if value is None:
        return None
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def discover(context=None, mountinfo_path: str = "/proc/self/mountinfo") -> list[BlockDevice]:
    """Every block device that can hold the image, parents before children."""
    import pyudev

    context = context or pyudev.Context()
    try:
        with open(mountinfo_path) as f:
            text = f.read()
    except OSError:
        text = ""
    mounts, types = parse_mountinfo(text), mount_types(text)
    devices: list[BlockDevice] = []
    live = udev_running()
    for udev in context.list_devices(subsystem="block"):
        dev = _from_udev(udev, mounts, live, types)
        if dev is not None:
            devices.append(dev)
    order = {"disk": 0, "loop": 0, "raid": 1, "part": 2, "dm": 3, "lvm": 3}
    devices.sort(key=lambda d: (order.get(d.type, 4), _natural(d.name)))
    return devices


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def udev_running() -> bool:
    """Whether a udevd serves this machine now (its database is then kept up to date)."""
    try:
        r = subprocess.run(["udevadm", "control", "--ping", "--timeout=1"], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def _from_udev(
    udev, mounts: dict[str, list[str]], live: bool = True, types: dict[str, str] | None = None
) -> BlockDevice | None:
    name = udev.sys_name
    if name.startswith(SKIP_PREFIXES):
        return None
    props = udev.properties
    try:
        size = int(udev.attributes.asstring("size")) * 512
    except (KeyError, ValueError, UnicodeDecodeError):
        size = 0
    if size == 0:  # unattached loop, empty card reader or CD drive
        return None
    devnode = udev.device_node or f"/dev/{name}"
    devtype = props.get("DEVTYPE", "disk")
    kind = "part" if devtype == "partition" else "disk"
    lvm = None
    md_uuid = None
    path = devnode
    if name.startswith("loop") and kind == "disk":
        kind = "loop"
    elif name.startswith("dm-"):
        kind = "dm"
        dm_name = props.get("DM_NAME") or _sysattr(udev, "dm/name")
        dm_uuid = props.get("DM_UUID") or _sysattr(udev, "dm/uuid") or ""
        if dm_name:
            path = f"/dev/mapper/{dm_name}"
        vg, lv = props.get("DM_VG_NAME"), props.get("DM_LV_NAME")
        if vg and lv:
            lvm = f"{vg}/{lv}"
        elif dm_uuid.startswith("LVM-") and dm_name:
            lvm = lvm_from_path(path)
        if lvm:
            kind = "lvm"
    elif name.startswith("md") and kind == "disk":
        kind = "raid"
        md_uuid = props.get("MD_UUID")
    fstype = props.get("ID_FS_TYPE") or None
    label = _decode_udev(props.get("ID_FS_LABEL_ENC")) or props.get("ID_FS_LABEL") or None
    uuid = props.get("ID_FS_UUID") or None
    partuuid = props.get("ID_PART_ENTRY_UUID") or None
    partlabel = _decode_udev(props.get("ID_PART_ENTRY_NAME")) or None
    origin = "udev"
    why: str | None = None  # blkid's error, when it was asked and read nothing
    pttype = props.get("ID_PART_TABLE_TYPE")
    if "ID_FS_TYPE" not in props and "ID_PART_ENTRY_UUID" not in props:
        # No udev database entry for this device: probe it ourselves.
        probe, why = blkid_probe_why(devnode)
        pttype = pttype or probe.get("PTTYPE")
        fstype = probe.get("TYPE") or fstype
        label = probe.get("LABEL") or label
        uuid = probe.get("UUID") or uuid
        partuuid = probe.get("PART_ENTRY_UUID") or partuuid
        partlabel = probe.get("PART_ENTRY_NAME") or partlabel
        origin = "blkid"
    elif not live:
        # No udevd keeps the database up to date (a rescue system, a chroot, a container): what
        # it says may be another disk's that had this node before. The disk itself decides.
        probe, _ = blkid_probe_why(devnode)
        seen = (probe.get("TYPE"), probe.get("UUID"), probe.get("LABEL"), probe.get("PART_ENTRY_UUID"))
        if probe and seen != (fstype, uuid, label, partuuid):
            fstype, uuid, label = probe.get("TYPE"), probe.get("UUID"), probe.get("LABEL")
            partuuid = probe.get("PART_ENTRY_UUID") or partuuid
            partlabel = probe.get("PART_ENTRY_NAME") or partlabel
            origin = "blkid (udev's database was stale: no udevd runs)"
    parent = None
    disk = udev
    if kind == "part":
        parent_dev = udev.find_parent("block", "disk")
        if parent_dev is not None:
            parent = parent_dev.sys_name
            disk = parent_dev
    else:
        slaves = _slaves(udev)
        if slaves:
            parent = slaves[0]
    model = disk.properties.get("ID_MODEL") or _sysattr(disk, "device/model")
    serial = (
        disk.properties.get("ID_SERIAL_SHORT")
        or disk.properties.get("ID_SERIAL")
        or _sysattr(disk, "device/serial")
        or _sysattr(disk, "serial")
    )
    if kind == "loop" or (kind == "part" and parent and parent.startswith("loop")):
        model = model or "loop: " + (_sysattr(disk, "loop/backing_file") or "?")
    devnum = f"{os.major(udev.device_number)}:{os.minor(udev.device_number)}"
    mountpoints = list(mounts.get(devnum, []))
    for src in (devnode, path):
        for mp in mounts.get(src, []):
            if mp not in mountpoints:
                mountpoints.append(mp)
    mounted_as = next((t for t in ((types or {}).get(k) for k in (devnum, devnode, path)) if t), None)
    if not fstype and mounted_as and mountpoints:
        # Mounted, yet neither udev nor blkid could read it (a FUSE mount, a node this user
        # cannot open): the kernel's mount table knows what it is.
        fstype = mounted_as
        origin += "; filesystem type from the mount table"
    if fstype:
        why = None
    elif pttype:
        why = f"a partition table ({shown(pttype)}): its partitions hold the filesystems"
    elif origin == "udev":
        why = "udev found no filesystem signature"
    elif why is None:
        why = ("no udev data and " if origin == "blkid" else "") + "blkid found no filesystem signature"
    links = sorted(str(link) for link in udev.device_links)
    return BlockDevice(
        origin=origin,
        why_no_fs=why,
        name=name,
        path=path,
        type=kind,
        size=size,
        devnum=devnum,
        fstype=fstype,
        label=label,
        uuid=uuid,
        partuuid=partuuid,
        partlabel=partlabel,
        model=(model or None),
        serial=(serial or None),
        mountpoints=mountpoints,
        parent=parent,
        lvm=lvm,
        md_uuid=md_uuid,
        links=links,
    )


def no_filesystem(dev: BlockDevice) -> str | None:
    """Why *dev* cannot hold an image, in the words the device list (CLI and TUI) shows, or None
    when it can."""
    if dev.usable:
        return None
    if dev.fstype:
        return f"{dev.fstype} is not a filesystem an image can be stored on"
    return f"no filesystem: {dev.why_no_fs or 'none found'}"


def _sysattr(udev, name: str) -> str | None:
    try:
        value = udev.attributes.asstring(name).strip()
    except (KeyError, UnicodeDecodeError, OSError):
        return None
    return value or None


def _slaves(udev) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(udev.sys_path, "slaves")))
    except OSError:
        return []


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(value)


@contextlib.contextmanager
def mounted_readonly(device: BlockDevice):
    """The device's filesystem as a directory: its mountpoint when it is mounted, else a
    private read-only mount (nosuid, nodev, noexec) in a temporary directory, removed after.
    Used to list and inspect images; nothing on the volume is changed."""
    if device.mountpoints:
        yield device.mountpoints[0]
        return
    where = tempfile.mkdtemp(prefix="tmpfs-root-source.")
    try:
        r = subprocess.run(
            ["mount", "-o", "ro,nosuid,nodev,noexec", device.path, where], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise OSError(
                f"cannot mount {device.path} read-only: {(r.stderr.strip().splitlines() or ['mount failed'])[-1]}"
            )
        try:
            yield where
        finally:
            subprocess.run(["umount", where], capture_output=True)
    finally:
        try:
            os.rmdir(where)
        except OSError:
            pass
