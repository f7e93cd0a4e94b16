"""The plan: what the admin chose, and everything derived from it.

A :class:`Plan` holds the admin's intent (source, image, size, kernels, title,
boot mode, extra arguments).  :func:`kernel_cmdline` derives the kernel command
line, compatible with the original dracut-tmpfs-root module::

    root=tmpfs:<source> rd.tmpfs.imgfile=<path> rd.tmpfs.size=<size>

plus ``rd.lvm.lv=`` for an LVM volume and ``ip=… rd.neednet=1`` for NFS.
Plans save to and load from TOML.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields

from tui.devices import BlockDevice, lvm_from_path, match_source
from tui.errors import BadInput, shown
from tui.owned import INITRD_TEMPLATE, KVER_RE
from tui.plan_fields import plan_field, toml_value

BOOT_MODES = ("menu", "once", "default")
#: Arguments a boot-once entry carries so that a failed boot falls back to the default entry.
ONCE_ARGS = ["rd.shell=0", "rd.emergency=reboot", "panic=10"]
#: The longest title accepted (characters), and the default one's fallback.
TITLE_MAX = 200


class PlanError(BadInput):
    """A plan file that cannot be read; the message is one line for the user."""


@dataclass
class Plan:
    source: str = ""
    image: str = ""
    size: str | None = None
    kernels: list[str] = field(default_factory=list)  # empty: the default kernel
    title: str | None = None  # None: from the target's os-release
    boot: str = "once"
    append: str = ""
    network: str | None = None  # ip= for an NFS or http(s) source; None: dhcp
    sha256: str | None = None
    tmpfs_opts: str | None = None
    hostonly: bool = True

    # ------------------------------------------------------------- TOML I/O
    def to_toml(self) -> str:
        lines = ["# tmpfs-root plan: load it with `tmpfs-root plan --plan FILE` or `apply --plan FILE`"]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            lines.append(f"{f.name} = {toml_value(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, origin: str = "plan file") -> Plan:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PlanError(f"{origin}: not valid TOML ({shown(str(e), 100)})") from None
        known = {f.name: f for f in fields(cls)}
        plan = cls()
        for key, value in data.items():
            if key not in known:
                raise PlanError(f"{origin}: unknown key {shown(key)}; accepted: {', '.join(known)}")
            declared = plan_field(key)
            if not declared.accepts(value):
                raise PlanError(
                    f"{origin}: '{key}' must be {declared.toml} (e.g. {declared.toml_line()}), "
                    f"not {type(value).__name__}"
                )
            setattr(plan, key, list(value) if isinstance(value, list) else value)
        return plan

    def to_json(self) -> dict:
        return asdict(self)


def check_save_path(path: str) -> None:
    """Refuse a path to save a plan to unless it is a regular file or a new name in an existing
    directory (never a directory, a device node, a FIFO or a symbolic link)."""
    from tui.safefile import check_output

    where = f"--save {shown(path)}"
    if not path or path.endswith("/"):
        raise BadInput(f"{where}: accepted: a file path, e.g. /root/tmpfs-root.toml")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BadInput(f"{where}: directory {shown(parent)} does not exist")
    try:
        check_output(path)
    except OSError as e:
        raise BadInput(f"{where}: {e.strerror}") from None


def save_plan(path: str, plan: Plan) -> None:
    """Write *plan* as TOML to *path* (mode 0600), atomically; BadInput when it cannot be."""
    from tui.safefile import write_atomic

    check_save_path(path)
    try:
        write_atomic(path, plan.to_toml().encode(), 0o600)
    except OSError as e:
        raise BadInput(f"--save {shown(path)}: cannot be written ({e.strerror})") from None


# ------------------------------------------------------------------ sources
@dataclass
class Source:
    """A parsed ``<source>``: a block device identifier or an NFS export."""

    kind: str  # "path", "LABEL", "UUID", "PARTUUID", "PARTLABEL", "nfs", "http"
    value: str  # the identifier as it goes after root=tmpfs:
    nfs_scheme: str = ""
    nfs_server: str = ""
    nfs_path: str = ""
    nfs_options: str = ""

    @property
    def is_nfs(self) -> bool:
        return self.kind == "nfs"

    @property
    def is_http(self) -> bool:
        return self.kind == "http"

    @property
    def is_network(self) -> bool:
        """Reached over the network (ip= rd.neednet=1), not a block device."""
        return self.kind in ("nfs", "http")

    def image_url(self, image: str) -> str:
        """The URL the boot fetches *image* from (an http source)."""
        return self.value.rstrip("/") + "/" + image


SOURCE_FORMS = (
    "/dev/…, LABEL=…, UUID=…, PARTUUID=…, PARTLABEL=…, nfs:server:/export[,opts], nfs4:server:/export[,opts], "
    "http://server[:port]/dir or https://…"
)
#: What the boot fetches over HTTP(S): no credentials (the command line is readable by
#: every user in /proc/cmdline), no query or fragment, characters the command line carries.
_HTTP_RE = re.compile(
    r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._~%+,=:/-]*)?"
)
_NFS_RE = re.compile(
    r"(?P<scheme>nfs4?):(?P<server>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):"
    r"(?P<path>/[^,:\s]*)(?:[,:](?P<opts>[A-Za-z0-9=,._:-]+))?"
)


def parse_source(text: str) -> Source:
    """Parse a source; raises ValueError with what is accepted."""
    text = text.strip()
    if text.startswith("tmpfs:"):
        text = text[len("tmpfs:") :]
    if text.startswith(("http://", "https://")):
        return _parse_http(text)
    if text.startswith("NFS="):
        text = text[len("NFS=") :]
    if text.startswith(("nfs:", "nfs4:")):
        m = _NFS_RE.fullmatch(text)
        if not m:
            raise ValueError(
                "not an NFS export; accepted: nfs:server:/export[,opts] or "
                "nfs4:server:/export[,opts] (e.g. nfs:10.0.0.11:/srv/images,vers=3)"
            )
        return Source("nfs", "NFS=" + text, m["scheme"], m["server"], m["path"], m["opts"] or "")
    key, sep, value = text.partition("=")
    if sep and key in ("LABEL", "UUID", "PARTUUID", "PARTLABEL"):
        if not value:
            raise ValueError(f"{key}= needs a value (e.g. {key}={_EXAMPLES[key]})")
        if not _ID_VALUE_RE[key].fullmatch(value):
            raise ValueError(f"is not a {key}; accepted: {_ID_ACCEPTED[key]} (e.g. {key}={_EXAMPLES[key]})")
        return Source(key, text)
    if text.startswith("/dev/"):
        if not _DEV_PATH_RE.fullmatch(text) or any(p in (".", "..") for p in text.split("/")[2:]):
            raise ValueError(
                "is not a device path; accepted: /dev/NAME or /dev/DIR/NAME without "
                "'.', '..' or empty parts (e.g. /dev/vda1, /dev/mapper/vg-images)"
            )
        return Source("path", text)
    raise ValueError(f"not a source; accepted: {SOURCE_FORMS}")


def _parse_http(text: str) -> Source:
    accepted = "http://server[:port]/dir or https://…, e.g. http://10.0.0.11:8080/images"
    if "@" in text.split("/", 3)[2]:
        raise ValueError("carries credentials, which every user could read in /proc/cmdline; accepted: " + accepted)
    m = _HTTP_RE.fullmatch(text)
    if not m or (m["port"] and not 0 < int(m["port"]) < 65536):
        raise ValueError(f"not a URL the boot can fetch (no query, fragment or spaces); accepted: {accepted}")
    return Source("http", text)


_DEV_PATH_RE = re.compile(r"/dev(/[A-Za-z0-9._+:@,=-]{1,255}){1,8}")
_ID_VALUE_RE = {
    "UUID": re.compile(r"[0-9A-Za-z-]{1,64}"),
    "PARTUUID": re.compile(r"[0-9A-Fa-f-]{1,64}"),
    "LABEL": re.compile(r".{1,255}"),
    "PARTLABEL": re.compile(r".{1,255}"),
}
_ID_ACCEPTED = {
    "UUID": "up to 64 letters, digits and -",
    "PARTUUID": "up to 64 hex digits and -",
    "LABEL": "up to 255 characters",
    "PARTLABEL": "up to 255 characters",
}
_EXAMPLES = {"LABEL": "IMGVOL", "UUID": "0a1b2c3d-…", "PARTUUID": "6f1c…", "PARTLABEL": "images"}


# ------------------------------------------------------------------ kernels
def version_key(kver: str) -> list:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", kver) if t]


def target_kernels(host) -> list[str]:
    """Kernel versions with a modules directory in the target, oldest first; only names
    tmpfs-root accepts (a directory named with quotes or backslashes is not a kernel)."""
    return sorted(
        (k for k in host.listdir("/lib/modules") if KVER_RE.fullmatch(k) and host.is_dir(f"/lib/modules/{k}")),
        key=version_key,
    )


def default_kernels(host) -> list[str]:
    """The running kernel if its modules are in the target, else the newest one there."""
    available = target_kernels(host)
    running = os.uname().release
    if running in available:
        return [running]
    return available[-1:]


def os_pretty_name(host) -> str:
    """The target's PRETTY_NAME, or "Linux" when it has none that could be a title (it comes
    from the target, so control characters, escapes and length are not trusted)."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = host.read_text(path, limit=64 << 10)
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip().strip("\"'").replace('\\"', '"')
                if name and name.isprintable() and len(name) <= TITLE_MAX // 2:
                    return name
                return "Linux"
    return "Linux"


# ------------------------------------------------------------------ derived
@dataclass
class Resolved:
    """What a plan turns into on a given target."""

    kernels: list[str]
    title: str
    cmdline: list[str]  # tmpfs-root's own arguments
    initrds: dict[str, str]  # kver -> initramfs path in the target
    inherited: list[str] = field(default_factory=list)  # the admin's, from /etc/default/grub

    @property
    def entry_cmdline(self) -> list[str]:
        """The whole command line of the entry: the admin's arguments, then tmpfs-root's."""
        return self.inherited + self.cmdline

    def entry_title(self, kver: str) -> str:
        return f"{self.title} ({kver})"


def source_device(plan: Plan, devices: list[BlockDevice] | None) -> tuple[Source | None, BlockDevice | None]:
    """The plan's parsed source (None if it does not parse) and the one device it names, if exactly one."""
    try:
        source = parse_source(plan.source)
    except ValueError:
        return None, None
    if source.is_network:
        return source, None
    matches = match_source(source.value, devices or [])
    return source, (matches[0] if len(matches) == 1 else None)


def source_lvm(source: Source, device: BlockDevice | None) -> str | None:
    """``vg/lv`` when the source is an LVM volume: from the device, else from a /dev/mapper path."""
    if device is not None:
        return device.lvm
    return lvm_from_path(source.value) if source.kind == "path" else None


def kernel_cmdline(plan: Plan, devices: list[BlockDevice] | None = None) -> list[str]:
    """The kernel arguments the entry boots with (our part of the command line)."""
    source, device = source_device(plan, devices)
    if source is None:
        source = Source("path", plan.source)
    value = source.value
    if device is not None and source.kind in ("UUID", "PARTUUID"):
        # the case udev names the link with (FAT UUIDs are upper case), whatever was typed
        value = f"{source.kind}={device.uuid if source.kind == 'UUID' else device.partuuid}"
    args = [f"root=tmpfs:{value}", f"rd.tmpfs.imgfile={plan.image}"]
    if plan.size:
        args.append(f"rd.tmpfs.size={plan.size}")
    if plan.sha256:
        args.append(f"rd.tmpfs.sha256={plan.sha256.lower()}")
    if plan.tmpfs_opts:
        args.append(f"rd.tmpfs.opts={plan.tmpfs_opts}")
    if source.is_network:
        args += [f"ip={plan.network or 'dhcp'}", "rd.neednet=1"]
    elif device is not None:
        args += device.extra_args()
    elif source_lvm(source, None):
        args.append(f"rd.lvm.lv={source_lvm(source, None)}")
    if plan.boot == "once":
        args += ONCE_ARGS
    if plan.append.strip():
        args += plan.append.split()
    return args


def resolve(plan: Plan, host, devices: list[BlockDevice] | None = None) -> Resolved:
    kernels = list(plan.kernels) or default_kernels(host)
    title = plan.title or f"{os_pretty_name(host)}, root in RAM (tmpfs-root)"
    from tui.bootloader import inherited_args

    return Resolved(
        kernels=kernels,
        title=title,
        cmdline=kernel_cmdline(plan, devices),
        initrds={k: INITRD_TEMPLATE.format(kver=k) for k in kernels},
        inherited=inherited_args(host),
    )
