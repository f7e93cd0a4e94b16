"""Validation of a plan: every problem at once, each naming the field, the value and what is accepted.

Errors block ``plan``/``apply``; warnings are printed and do not (a source that
matches no device now may still appear at boot, the boot waits for it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tui.devices import BlockDevice, human_size, match_source
from tui.images import cheap_uncompressed_size, detect_format
from tui.plan import BOOT_MODES, SOURCE_FORMS, Plan, parse_source, target_kernels

#: How each plan field is spelled on the command line, so messages name what the user typed.
FIELD_OPTIONS = {
    "source": "--source", "image": "--image", "size": "--size", "kernels": "--kernel",
    "title": "--title", "boot": "--boot", "append": "--append", "network": "--ip",
    "sha256": "--sha256", "tmpfs_opts": "--tmpfs-opts", "root": "--root", "dracut": "dracut",
    "user": "user", "bootloader": "bootloader",
}
SIZE_ACCEPTED = "N, N followed by k, m, g, t, p or e, or N% of RAM (e.g. 2G, 512m, 50%)"
#: Characters that would break a kernel command line or grub.cfg quoting.
UNSAFE_CHARS = set(" \t\"'$;\\`")


@dataclass
class Problem:
    field: str
    value: str
    message: str
    severity: str = "error"  # or "warning"

    @property
    def option(self) -> str:
        return FIELD_OPTIONS.get(self.field, self.field)

    def line(self) -> str:
        """One line for stderr: severity, the option, the value given, what is wrong and accepted."""
        shown = f" {_show(self.value)}" if self.value != "" else ""
        return f"{self.severity}: {self.option}{shown}: {self.message}"

    def to_json(self) -> dict:
        return {"field": self.field, "option": self.option, "value": self.value,
                "message": self.message, "severity": self.severity}


def _show(value: str) -> str:
    return repr(value) if any(c in value for c in " \t'\"") or not value.isprintable() else f"'{value}'"


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------- sizes
_SIZE_RE = re.compile(r"(?P<num>[0-9]+)(?P<unit>[kKmMgGtTpPeE%]?)")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def parse_size(text: str, ram: int) -> int:
    """Bytes for a tmpfs ``size=`` value (N, N[kmgtpe], N%); ValueError otherwise."""
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(f"not a tmpfs size; accepted: {SIZE_ACCEPTED}")
    num, unit = int(m["num"]), m["unit"].lower()
    if num == 0:
        raise ValueError("0 means an unlimited tmpfs, which can exhaust RAM; "
                         f"accepted: {SIZE_ACCEPTED}")
    if unit == "%":
        if num > 100:
            raise ValueError(f"above 100% of RAM; accepted: {SIZE_ACCEPTED}")
        return ram * num // 100
    return num * _UNITS[unit]


def mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- validation
@dataclass
class Context:
    """What validation may look at beyond the plan itself."""

    host: object  # tui.host.Host
    devices: list[BlockDevice] | None = None  # None: discovery unavailable
    ram: int = 0
    euid: int = -1

    def __post_init__(self):
        if not self.ram:
            self.ram = mem_total()
        if self.euid < 0:
            self.euid = os.geteuid()


def validate(plan: Plan, ctx: Context) -> list[Problem]:
    problems: list[Problem] = []
    source, device = _check_source(plan, ctx, problems)
    _check_image_path(plan, problems)
    image_size = _check_image_on_source(plan, device, problems)
    _check_size(plan, ctx, image_size, problems)
    _check_kernels(plan, ctx, problems)
    _check_text_fields(plan, problems)
    _check_target(ctx, problems)
    _check_bootloader(plan, ctx, problems)
    return problems


def _unsafe(value: str) -> str | None:
    for ch in value:
        if ch in UNSAFE_CHARS or not ch.isprintable():
            return "whitespace" if ch.isspace() else ("a control character" if not ch.isprintable() else f"'{ch}'")
    return None


def _check_source(plan: Plan, ctx: Context, problems: list[Problem]):
    """The parsed source and the one device it names (each None when there is none)."""
    if not plan.source.strip():
        problems.append(Problem("source", "", "is required; accepted: " + SOURCE_FORMS))
        return None, None
    bad = _unsafe(plan.source)
    if bad:
        problems.append(Problem("source", plan.source, f"contains {bad}, which breaks the kernel "
                                "command line; name the volume by UUID= instead"))
        return None, None
    try:
        source = parse_source(plan.source)
    except ValueError as e:
        problems.append(Problem("source", plan.source, str(e)))
        return None, None
    if source.is_nfs or ctx.devices is None:
        return source, None
    matches = match_source(source.value, ctx.devices)
    if len(matches) > 1:
        names = ", ".join(d.path for d in matches)
        problems.append(Problem("source", plan.source, f"matches {len(matches)} devices ({names}); "
                                "accepted: an identifier that names one device, e.g. its UUID="))
        return source, None
    if not matches:
        problems.append(Problem("source", plan.source, "matches no block device now; the boot will "
                                "wait for it (check the identifier with `tmpfs-root devices`)",
                                "warning"))
        return source, None
    if not matches[0].usable:
        problems.append(Problem("source", plan.source, f"{matches[0].path} holds no filesystem "
                                f"({matches[0].fstype or 'none'}); accepted: a device with a filesystem"))
    return source, matches[0]


def _check_image_path(plan: Plan, problems: list[Problem]) -> None:
    image = plan.image
    accepted = "a relative path on the source volume, e.g. images/rootfs.tar.zst"
    if not image:
        problems.append(Problem("image", "", f"is required; accepted: {accepted}"))
        return
    if image.startswith("/"):
        problems.append(Problem("image", image, f"is absolute; accepted: {accepted}"))
    if ".." in image.split("/"):
        problems.append(Problem("image", image, f"contains '..'; accepted: {accepted}"))
    bad = _unsafe(image)
    if bad:
        problems.append(Problem("image", image, f"contains {bad}, which breaks the kernel command "
                                f"line or grub.cfg; accepted: {accepted} without spaces, quotes, $ ; \\"))


def _check_image_on_source(plan: Plan, device: BlockDevice | None, problems: list[Problem]) -> int | None:
    """When the source volume is mounted here, check the image exists and is an archive."""
    if device is None or not device.mountpoints or not plan.image:
        return None
    if any(p.field == "image" for p in problems):
        return None
    mountpoint = device.mountpoints[0]
    path = os.path.join(mountpoint, plan.image)
    if not os.path.isfile(path):
        problems.append(Problem("image", plan.image, f"not found on {plan.source} (mounted at "
                                f"{mountpoint}); accepted: an existing archive on the source volume"))
        return None
    try:
        fmt = detect_format(path)
    except OSError as e:
        problems.append(Problem("image", plan.image, f"cannot be read: {e.strerror}"))
        return None
    if fmt is None:
        problems.append(Problem("image", plan.image, "is not an archive (by its first bytes); "
                                "accepted: tar, or tar compressed with gzip, xz, zstd, bzip2 or lz4"))
        return None
    info = cheap_uncompressed_size(path, fmt)
    return info.uncompressed if info.exact else None


def _check_size(plan: Plan, ctx: Context, image_size: int | None, problems: list[Problem]) -> None:
    if plan.size is None:
        return
    try:
        size = parse_size(plan.size, ctx.ram)
    except ValueError as e:
        problems.append(Problem("size", plan.size, str(e)))
        return
    if ctx.ram and size > ctx.ram:
        live = getattr(ctx.host, "is_live", True)
        problems.append(Problem("size", plan.size, f"is above this machine's RAM ({human_size(ctx.ram)}); "
                                f"accepted: {SIZE_ACCEPTED} up to the RAM",
                                "error" if live else "warning"))
    if image_size is not None and size < image_size:
        problems.append(Problem("size", plan.size, f"is below the image's uncompressed size "
                                f"({human_size(image_size)}); accepted: at least that plus room to run"))


def _check_kernels(plan: Plan, ctx: Context, problems: list[Problem]) -> None:
    host = ctx.host
    available = target_kernels(host)
    if not plan.kernels:
        if not available:
            problems.append(Problem("kernels", "", "no kernel with modules in /lib/modules of the "
                                    f"target {host.root}; install a kernel, or pass --kernel"))
        return
    for kver in plan.kernels:
        if not re.fullmatch(r"[A-Za-z0-9._+~-]+", kver):
            problems.append(Problem("kernels", kver, "is not a kernel version; accepted: a name from "
                                    f"/lib/modules, here: {', '.join(available) or 'none'}"))
        elif kver not in available:
            problems.append(Problem("kernels", kver, "has no modules in /lib/modules of the target; "
                                    f"accepted: {', '.join(available) or 'none installed'}"))
        elif not host.exists(f"/boot/vmlinuz-{kver}"):
            problems.append(Problem("kernels", kver, f"has no /boot/vmlinuz-{kver} in the target; "
                                    "accepted: an installed kernel"))


_IP_WORDS = {"dhcp", "on", "any", "dhcp6", "auto6", "either6", "link6", "single-dhcp"}
_TMPFS_OPTS = {
    "mpol": re.compile(r"(default|local|prefer(:[0-9]+)?|bind:[0-9,-]+|interleave(:[0-9,-]+)?)"),
    "nr_inodes": re.compile(r"[0-9]+[kKmMgG]?"),
    "huge": re.compile(r"(never|always|within_size|advise)"),
}


def _check_text_fields(plan: Plan, problems: list[Problem]) -> None:
    if plan.boot not in BOOT_MODES:
        problems.append(Problem("boot", plan.boot, "accepted: menu (add an entry), once (boot it on "
                                "the next reboot only), default (make it the default)"))
    if plan.title is not None:
        if not plan.title.strip():
            problems.append(Problem("title", plan.title, "is empty; accepted: any printable text"))
        elif not plan.title.isprintable() or len(plan.title) > 200:
            problems.append(Problem("title", plan.title, "accepted: printable text of at most 200 "
                                    "characters, without newlines or control characters"))
    if plan.append:
        bad = _unsafe(plan.append.replace(" ", ""))
        if bad:
            problems.append(Problem("append", plan.append, f"contains {bad}; accepted: kernel "
                                    "arguments separated by spaces, without quotes, $ ; \\"))
        for arg in plan.append.split():
            key = arg.split("=", 1)[0]
            if key == "root" or key.startswith("rd.tmpfs."):
                problems.append(Problem("append", arg, f"sets {key}, which the plan sets itself; "
                                        "accepted: other kernel arguments (use --source, --image, --size)"))
    if plan.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", plan.sha256):
        problems.append(Problem("sha256", plan.sha256, "accepted: 64 hexadecimal digits "
                                "(the output of sha256sum)"))
    if plan.tmpfs_opts is not None:
        for opt in plan.tmpfs_opts.split(","):
            key, _, value = opt.partition("=")
            rule = _TMPFS_OPTS.get(key)
            if rule is None or not rule.fullmatch(value):
                problems.append(Problem("tmpfs_opts", plan.tmpfs_opts, f"'{opt}' is not accepted; "
                                        "accepted: mpol=interleave|local|bind:N|prefer:N, nr_inodes=N, "
                                        "huge=never|always|within_size|advise, comma-separated"))
                break
    if plan.network is not None:
        is_nfs = plan.source.lstrip().startswith(("nfs", "NFS=", "tmpfs:NFS="))
        if not is_nfs:
            problems.append(Problem("network", plan.network, "only applies to an NFS source; "
                                    "accepted: omit it for a block device"))
        elif not (plan.network in _IP_WORDS or re.fullmatch(r"[0-9A-Za-z.:\[\]_-]+", plan.network)
                  and plan.network.count(":") >= 2):
            problems.append(Problem("network", plan.network, "accepted: dhcp, dhcp6, on, any, auto6 or "
                                    "<client-ip>:[<server>]:<gateway>:<netmask>:<hostname>:<iface>:none"))


def _check_target(ctx: Context, problems: list[Problem]) -> None:
    host = ctx.host
    if not host.is_live and not host.is_dir("/"):
        problems.append(Problem("root", str(host.root), "is not a directory; accepted: a directory "
                                "holding a system, or / for this one"))
        return
    if host.which("dracut") is None:
        problems.append(Problem("dracut", str(host.root), "is not installed in the target; "
                                "install the dracut package there (Debian: dracut; Fedora/RHEL: dracut)"))
    if host.is_live and ctx.euid != 0:
        problems.append(Problem("user", "", "not root: converting this system (--root /) needs root; "
                                "run with sudo, or pass --root DIR for a mounted system"))


def _check_bootloader(plan: Plan, ctx: Context, problems: list[Problem]) -> None:
    from tui import bootloader

    bl = bootloader.detect(ctx.host)
    if bl.style == "":
        problems.append(Problem("bootloader", str(ctx.host.root), "no GRUB found in the target "
                                "(grub-mkconfig or grub2-mkconfig); accepted: GRUB with /etc/grub.d, "
                                "or GRUB with BLS entries in /boot/loader/entries"))
        return
    if plan.boot == "once":
        reason = bootloader.check_once(ctx.host, bl)
        if reason:
            problems.append(Problem("boot", plan.boot, f"{reason}; accepted here: menu, or default"))
    elif plan.boot == "default":
        reason = bootloader.check_default(ctx.host, bl)
        if reason:
            problems.append(Problem("boot", plan.boot, reason))
