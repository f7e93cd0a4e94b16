"""Validation of a plan: every problem at once, each naming the field, the value and what is accepted.

Errors block ``plan``/``apply``; warnings are printed and do not (a source that
matches no device now may still appear at boot, the boot waits for it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tui.devices import BlockDevice, human_size, match_source
from tui.errors import shown
from tui.hints import command
from tui.images import ImageError, cheap_uncompressed_size, detect_format, read_index
from tui.owned import KERNEL_TEMPLATE, KVER_RE

if TYPE_CHECKING:
    from tui.bootloader import Bootloader
    from tui.host import Host
from tui.plan import BOOT_MODES, SOURCE_FORMS, TITLE_MAX, Plan, kernel_cmdline, parse_source, target_kernels
from tui.plan_fields import FIELDS

#: How each plan field (and each other thing a problem can be about) is spelled on the command
#: line, so messages name what the user typed.
FIELD_OPTIONS = {f.name: f.option for f in FIELDS} | {
    "root": "--root",
    "dracut": "dracut",
    "user": "user",
    "bootloader": "bootloader",
    "tools": "tool",
}
SIZE_ACCEPTED = "N, N followed by k, m, g, t, p or e, or N% of RAM (e.g. 2G, 512m, 50%)"
#: The largest tmpfs size: what the boot's shell arithmetic (signed 64 bits) holds with room.
SIZE_MAX = 1 << 62
#: Characters a value on the kernel command line may have: nothing GRUB's script parser
#: (quotes, $, ;, {, }, |, &, <, >, #, globs), the kernel's (quotes) or a shell interprets.
ARG_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._,:=/@+%!~^-")
ARG_ACCEPTED = "letters, digits and . _ , : = / @ + % ! ~ ^ -"
#: x86's COMMAND_LINE_SIZE, its terminating NUL included: the kernel cuts what is longer.
CMDLINE_MAX = 2048
#: Bounds of what the tool accepts, whatever the kernel would.
SOURCE_MAX, IMAGE_MAX, ARG_MAX = 1024, 1024, CMDLINE_MAX
#: Extra kernel arguments that would keep a failed boot-once from falling back to the default.
ONCE_DEFEATERS = {
    "panic": "panic=0 waits forever after a panic instead of rebooting",
    "rd.shell": "a shell waits on the console instead of rebooting",
    "rd.emergency": "the failure path must be rd.emergency=reboot",
    "rd.break": "the boot stops at a breakpoint and waits",
}


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
        value = f" {shown(self.value)}" if self.value != "" else ""
        return f"{self.severity}: {self.option}{value}: {self.message}"

    def to_json(self) -> dict:
        return {
            "field": self.field,
            "option": self.option,
            "value": self.value,
            "message": self.message,
            "severity": self.severity,
        }


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
    if len(m["num"].lstrip("0")) > 18:  # as the boot's shell (tr_size_bytes) takes it
        raise ValueError(f"too large; accepted: {SIZE_ACCEPTED}, at most 4E")
    num, unit = int(m["num"]), m["unit"].lower()
    if num == 0:
        raise ValueError(f"0 means an unlimited tmpfs, which can exhaust RAM; accepted: {SIZE_ACCEPTED}")
    if unit == "%":
        if num > 100:
            raise ValueError(f"above 100% of RAM; accepted: {SIZE_ACCEPTED}")
        return ram * num // 100
    size = num * _UNITS[unit]
    if size > SIZE_MAX:
        raise ValueError(f"too large for the boot's arithmetic; accepted: {SIZE_ACCEPTED}, at most 4E")
    return size


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

    host: Host
    devices: list[BlockDevice] | None = None  # None: discovery unavailable
    ram: int = 0
    euid: int = -1
    bootloader: Bootloader | None = None  # detected once by whoever holds the context
    #: look beyond the plan's own text: the image on a mounted source (its format, its size),
    #: grub-probe for --boot once. Off for checks on every keystroke.
    probes: bool = True
    #: the image's uncompressed size when the caller read it already (the TUI's inspect)
    image_size: int | None = None

    def __post_init__(self):
        if not self.ram:
            self.ram = mem_total()
        if self.euid < 0:
            self.euid = os.geteuid()
        if self.bootloader is None:
            from tui.bootloader import detect

            self.bootloader = detect(self.host)


def validate(plan: Plan, ctx: Context) -> list[Problem]:
    problems: list[Problem] = []
    source, device = _check_source(plan, ctx, problems)
    _check_image_path(plan, problems)
    image_size = _check_image_on_source(plan, device, problems) if ctx.probes else None
    if source is not None and source.is_http:
        _check_http_pin(plan, problems)
        _check_http_tools(ctx, problems)
        if ctx.probes:
            image_size = _check_image_over_http(plan, source, problems)
    image_size = image_size or ctx.image_size
    _check_size(plan, ctx, image_size, problems)
    _check_kernels(plan, ctx, problems)
    _check_text_fields(plan, problems)
    _check_cmdline_length(plan, ctx, problems)
    _check_target(ctx, problems)
    if not any(p.field == "root" for p in problems):
        _check_tools(plan, ctx, problems)
    _check_bootloader(plan, ctx, problems)
    return problems


def _unsafe(value: str, allowed: set[str] = ARG_CHARS) -> str | None:
    """The first character of *value* that may not go on the kernel command line, in words."""
    for ch in value:
        if ch not in allowed:
            if ch.isspace():
                return "whitespace"
            return f"'{ch}'" if ch.isprintable() else f"the character {shown(ch)}"
    return None


def _check_source(plan: Plan, ctx: Context, problems: list[Problem]):
    """The parsed source and the one device it names (each None when there is none)."""
    if not plan.source.strip():
        problems.append(Problem("source", "", "is required; accepted: " + SOURCE_FORMS))
        return None, None
    if len(plan.source) > SOURCE_MAX:
        problems.append(
            Problem("source", plan.source, f"is longer than {SOURCE_MAX} characters; accepted: " + SOURCE_FORMS)
        )
        return None, None
    bad = _unsafe(plan.source, ARG_CHARS | {"[", "]"})  # [..] for an IPv6 NFS server
    if bad:
        problems.append(
            Problem(
                "source",
                plan.source,
                f"contains {bad}, which the kernel command "
                f"line cannot carry; name the volume by UUID= instead ({ARG_ACCEPTED})",
            )
        )
        return None, None
    try:
        source = parse_source(plan.source)
    except ValueError as e:
        problems.append(Problem("source", plan.source, str(e)))
        return None, None
    if source.is_network or ctx.devices is None:
        return source, None
    matches = match_source(source.value, ctx.devices)
    if len(matches) > 1:
        names = ", ".join(d.path for d in matches)
        problems.append(
            Problem(
                "source",
                plan.source,
                f"matches {len(matches)} devices ({names}); "
                "accepted: an identifier that names one device, e.g. its UUID=",
            )
        )
        return source, None
    if not matches:
        problems.append(
            Problem(
                "source",
                plan.source,
                "matches no block device now; the boot will "
                f"wait for it (check the identifier with `{command(ctx.host.root, 'devices')}`)",
                "warning",
            )
        )
        return source, None
    if not matches[0].usable:
        problems.append(
            Problem(
                "source",
                plan.source,
                f"{matches[0].path} holds no filesystem "
                f"({matches[0].fstype or 'none'}); accepted: a device with a filesystem",
            )
        )
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
    if len(image) > IMAGE_MAX:
        problems.append(Problem("image", image, f"is longer than {IMAGE_MAX} characters; accepted: {accepted}"))
        return
    bad = _unsafe(image)
    if bad:
        problems.append(
            Problem(
                "image",
                image,
                f"contains {bad}, which the kernel command line cannot carry; accepted: {accepted}, of {ARG_ACCEPTED}",
            )
        )


def _check_http_pin(plan: Plan, problems: list[Problem]) -> None:
    """Over plain http anyone on the way can change the image: it must be pinned, unless the
    admin said rd.tmpfs.insecure=1 in --append."""
    if plan.sha256 or not plan.source.strip().removeprefix("tmpfs:").startswith("http:"):
        return
    if "rd.tmpfs.insecure=1" in plan.append.split():
        return
    problems.append(
        Problem(
            "sha256",
            "",
            "is required over plain http (anyone on the network could change the image); accepted: 64 hex "
            "digits from the image's FILE.pin (or `tmpfs-root image inspect FILE --sha256`), or https, or "
            "--append rd.tmpfs.insecure=1",
        )
    )


def _check_http_tools(ctx: Context, problems: list[Problem]) -> None:
    """dracut's url-lib puts the target's curl into the initramfs; without it the build fails."""
    if not any(ctx.host.exists(p) for p in ("/usr/bin/curl", "/bin/curl")):
        problems.append(
            Problem("source", "", "an http(s) source needs curl in the target; accepted: install curl there", "warning")
        )


def _check_image_over_http(plan: Plan, source, problems: list[Problem]) -> int | None:
    """Ask the server as the boot will (tui/http_source.py): a missing image, a file that is
    not an archive, a sharded image without range requests are problems; a server that
    cannot be reached from here is a warning (the booting host may reach it)."""
    from tui import http_source

    if not plan.image or any(p.field == "image" for p in problems):
        return None
    url = source.image_url(plan.image)
    try:
        found = http_source.probe(url)
    except http_source.Unreachable as e:
        problems.append(Problem("source", plan.source, f"{e}; the boot will try", "warning"))
        return None
    if found.problem:
        problems.append(Problem("image", plan.image, f"at {url}: {found.problem}"))
        return None
    return found.uncompressed


def _check_image_on_source(plan: Plan, device: BlockDevice | None, problems: list[Problem]) -> int | None:
    """When the source volume is mounted here, check the image exists and is an archive."""
    if device is None or not device.mountpoints or not plan.image:
        return None
    if any(p.field == "image" for p in problems):
        return None
    mountpoint = device.mountpoints[0]
    path = os.path.join(mountpoint, plan.image)
    if not os.path.isfile(path):
        problems.append(
            Problem(
                "image",
                plan.image,
                f"not found on {plan.source} (mounted at "
                f"{mountpoint}); accepted: an existing archive on the source volume",
            )
        )
        return None
    try:
        fmt = detect_format(path)
    except OSError as e:
        problems.append(Problem("image", plan.image, f"cannot be read: {e.strerror}"))
        return None
    if fmt is None:
        problems.append(
            Problem(
                "image",
                plan.image,
                "is not an archive (by its first bytes); "
                "accepted: tar, or tar compressed with gzip, xz, zstd, bzip2 or lz4",
            )
        )
        return None
    try:
        info = cheap_uncompressed_size(path, fmt)
    except ImageError as e:  # a sharded image whose index is damaged
        problems.append(Problem("image", plan.image, f"{str(e).split(': ', 1)[-1]}; accepted: an image as made"))
        return None
    if fmt == "sharded" and plan.sha256 and plan.sha256.lower() != (pin := read_index(path).digest):
        problems.append(
            Problem(
                "sha256",
                plan.sha256,
                f"is not the pin of {shown(plan.image)} on {plan.source}: the boot would refuse it. A sharded "
                f"image's pin is the sha256 of its index, which lists every shard's, not the whole file's "
                f"(sha256sum's, FILE.sha256); accepted: {pin} (its FILE.pin, or `image inspect FILE --sha256`)",
            )
        )
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
        problems.append(
            Problem(
                "size",
                plan.size,
                f"is above this machine's RAM ({human_size(ctx.ram)}); accepted: {SIZE_ACCEPTED} up to the RAM",
                "error" if live else "warning",
            )
        )
    if image_size is not None and size < image_size:
        problems.append(
            Problem(
                "size",
                plan.size,
                f"is below the image's uncompressed size "
                f"({human_size(image_size)}); accepted: at least that plus room to run",
            )
        )


def _check_kernels(plan: Plan, ctx: Context, problems: list[Problem]) -> None:
    host = ctx.host
    available = target_kernels(host)
    if not plan.kernels:
        if not available:
            problems.append(
                Problem(
                    "kernels",
                    "",
                    "no kernel with modules in /lib/modules of the "
                    f"target {host.root}; install a kernel, or pass --kernel",
                )
            )
        return
    for kver in plan.kernels:
        if not KVER_RE.fullmatch(kver):
            problems.append(
                Problem(
                    "kernels",
                    kver,
                    "is not a kernel version; accepted: a name from "
                    f"/lib/modules, here: {', '.join(available) or 'none'}",
                )
            )
        elif kver not in available:
            problems.append(
                Problem(
                    "kernels",
                    kver,
                    "has no modules in /lib/modules of the target; "
                    f"accepted: {', '.join(available) or 'none installed'}",
                )
            )
        elif not host.exists(KERNEL_TEMPLATE.format(kver=kver)):
            problems.append(
                Problem("kernels", kver, f"has no /boot/vmlinuz-{kver} in the target; accepted: an installed kernel")
            )


#: Why huge=always is refused for the root tmpfs (tr_fill_root says the same at boot).
HUGE_ALWAYS = "would give every file of the root a 2 MiB page of RAM (a 780 MB Debian tree took 16.6 GB)"

_TMPFS_OPTS = {
    "mpol": re.compile(r"(default|local|prefer(:[0-9]{1,4})?|bind:[0-9,-]{1,64}|interleave(:[0-9,-]{1,64})?)"),
    "nr_inodes": re.compile(r"[0-9]{1,15}[kKmMgG]?"),
    # Not always: it gives every file of the root a 2 MiB page of RAM (README, tmpfs options).
    "huge": re.compile(r"(never|within_size|advise)"),
}


def _check_text_fields(plan: Plan, problems: list[Problem]) -> None:
    if plan.boot not in BOOT_MODES:
        problems.append(
            Problem(
                "boot",
                plan.boot,
                "accepted: menu (add an entry), once (boot it on the next reboot only), default (make it the default)",
            )
        )
    _check_title(plan, problems)
    _check_append(plan, problems)
    if plan.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", plan.sha256):
        problems.append(Problem("sha256", plan.sha256, "accepted: 64 hexadecimal digits (the output of sha256sum)"))
    if plan.tmpfs_opts is not None:
        for opt in plan.tmpfs_opts.split(","):
            key, _, value = opt.partition("=")
            rule = _TMPFS_OPTS.get(key)
            if rule is None or not rule.fullmatch(value):
                why = HUGE_ALWAYS if opt == "huge=always" else "is not accepted"
                problems.append(
                    Problem(
                        "tmpfs_opts",
                        plan.tmpfs_opts,
                        f"{shown(opt)} {why}; "
                        "accepted: mpol=interleave|local|bind:N|prefer:N, nr_inodes=N, "
                        "huge=within_size|advise|never, comma-separated",
                    )
                )
                break
    if plan.network is not None:
        is_network = plan.source.lstrip().removeprefix("tmpfs:").startswith(("nfs", "NFS=", "http:", "https:"))
        if not is_network:
            problems.append(
                Problem(
                    "network",
                    plan.network,
                    "only applies to an NFS or http(s) source; accepted: omit it for a block device",
                )
            )
        elif not ip_setting_ok(plan.network):
            problems.append(
                Problem(
                    "network",
                    plan.network,
                    "is not a kernel ip= setting; accepted: "
                    "dhcp, dhcp6, on, any, auto6, <iface>:dhcp, or <client-ip>:[<server>]:"
                    "<gateway>:<netmask>:<hostname>:<iface>:none",
                )
            )


def _check_title(plan: Plan, problems: list[Problem]) -> None:
    if plan.title is None:
        return
    if not plan.title.strip():
        problems.append(Problem("title", plan.title, "is empty; accepted: any printable text"))
    elif not plan.title.isprintable() or len(plan.title) > TITLE_MAX:
        problems.append(
            Problem(
                "title",
                plan.title,
                f"accepted: printable text of at most {TITLE_MAX} "
                "characters, without newlines, tabs or control characters",
            )
        )


def _check_append(plan: Plan, problems: list[Problem]) -> None:
    if not plan.append:
        return
    if len(plan.append) > ARG_MAX:
        problems.append(
            Problem(
                "append",
                plan.append,
                f"is longer than {ARG_MAX} characters; accepted: kernel arguments separated by spaces",
            )
        )
        return
    bad = _unsafe(plan.append.replace(" ", ""))
    if bad:
        problems.append(
            Problem(
                "append",
                plan.append,
                f"contains {bad}; accepted: kernel arguments separated by spaces, each of {ARG_ACCEPTED}",
            )
        )
        return
    for arg in plan.append.split():
        key, has_value, value = arg.partition("=")
        # rd.tmpfs.insecure=1: the admin's own decision to boot an unpinned image over http
        if key == "root" or (key.startswith("rd.tmpfs.") and arg != "rd.tmpfs.insecure=1"):
            problems.append(
                Problem(
                    "append",
                    arg,
                    f"sets {key}, which the plan sets itself; "
                    "accepted: other kernel arguments (use --source, --image, --size)",
                )
            )
        elif plan.boot == "once" and key in ONCE_DEFEATERS and _defeats_once(key, has_value, value):
            problems.append(
                Problem(
                    "append",
                    arg,
                    f"defeats --boot once ({ONCE_DEFEATERS[key]}, so a "
                    "failed boot would not fall back to the default entry); accepted "
                    "with --boot once: leave it out, or use --boot menu",
                )
            )


def _defeats_once(key: str, has_value: str, value: str) -> bool:
    if key == "panic":
        return has_value != "" and value.lstrip("+") in ("0", "")
    if key == "rd.shell":
        return value not in ("0", "no", "off", "false")
    if key == "rd.emergency":
        return value != "reboot"
    return True  # rd.break, with or without a value


def _check_cmdline_length(plan: Plan, ctx: Context, problems: list[Problem]) -> None:
    """The whole command line, with what GRUB adds (BOOT_IMAGE=…), within the kernel's limit."""
    if any(p.severity == "error" and p.field in ("source", "image", "append", "kernels") for p in problems):
        return
    kernels = [k for k in plan.kernels if KVER_RE.fullmatch(k)] or target_kernels(ctx.host)[-1:] or ["x"]
    from tui.bootloader import inherited_args

    ours = " ".join(inherited_args(ctx.host) + kernel_cmdline(plan, ctx.devices))
    longest = max(len(f"BOOT_IMAGE={KERNEL_TEMPLATE.format(kver=k)} ") for k in kernels)
    total = longest + len(ours.encode()) + 1
    if total > CMDLINE_MAX:
        field = "append" if plan.append.strip() else "image"
        problems.append(
            Problem(
                field,
                getattr(plan, field),
                f"makes the kernel command line {total} bytes long with GRUB's BOOT_IMAGE= and "
                f"the arguments from /etc/default/grub; accepted: at most {CMDLINE_MAX} "
                "bytes in all (the kernel cuts the rest)",
            )
        )


# ------------------------------------------------------------------ ip= setting
_IP_WORDS = {"dhcp", "on", "any", "dhcp6", "auto6", "either6", "link6", "single-dhcp", "ibft"}
_IP_METHODS = {"none", "off", "dhcp", "on", "any", "dhcp6", "auto6", "either6", "ibft"}
_IFACE = re.compile(r"[A-Za-z0-9._-]{1,15}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})?")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def _ip_fields(value: str) -> list[str]:
    """Split an ip= value on ':' outside [IPv6] brackets."""
    fields, current, depth = [], "", 0
    for ch in value:
        if ch == ":" and depth == 0:
            fields.append(current)
            current = ""
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        current += ch
    return fields + [current]


def _is_ip(text: str) -> bool:
    import ipaddress

    addr = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return ip.version == 4 or text.startswith("[")


def _rest_ok(rest: list[str]) -> bool:
    """The optional tail: [<mtu>][:<macaddr>] or [<dns1>][:<dns2>]."""
    if not rest:
        return True
    if _MAC.fullmatch(":".join(rest[1:])) and (rest[0] == "" or rest[0].isdigit()):
        return True
    if len(rest) == 1 and rest[0].isdigit() and len(rest[0]) <= 5:
        return True
    return len(rest) <= 2 and all(f == "" or _is_ip(f) for f in rest)


def ip_setting_ok(value: str) -> bool:
    """Whether *value* is a kernel/dracut ``ip=`` setting."""
    if len(value) > 256:
        return False
    if value in _IP_WORDS:
        return True
    fields = _ip_fields(value)
    if 2 <= len(fields) <= 9 and _IFACE.fullmatch(fields[0]) and fields[1] in _IP_METHODS - {"none", "off"}:
        return _rest_ok(fields[2:])  # <iface>:<method>[:<mtu>[:<mac>]]
    if len(fields) < 7:
        return False
    client, peer, gateway, netmask, hostname, iface, method, *rest = fields
    return (
        _is_ip(client)
        and (peer == "" or _is_ip(peer))
        and (gateway == "" or _is_ip(gateway))
        and (netmask == "" or _is_ip(netmask) or (netmask.isdigit() and int(netmask) <= 128))
        and (hostname == "" or _HOSTNAME.fullmatch(hostname) is not None)
        and (iface == "" or _IFACE.fullmatch(iface) is not None)
        and method in _IP_METHODS
        and _rest_ok(rest)
    )


def _check_target(ctx: Context, problems: list[Problem]) -> None:
    host = ctx.host
    if not host.is_live and not host.is_dir("/"):
        problems.append(
            Problem(
                "root", str(host.root), "is not a directory; accepted: a directory holding a system, or / for this one"
            )
        )
        return
    if host.which("dracut") is None:
        problems.append(Problem("dracut", str(host.root), f"is not installed in the target; {DRACUT_INSTALL}"))
    if host.is_live and ctx.euid != 0:
        problems.append(
            Problem(
                "user",
                "",
                "not root: converting this system (--root /) needs root; "
                "run with sudo, or pass --root DIR for a mounted system",
            )
        )


#: What to install for dracut: on Debian dracut-core, beside initramfs-tools (the dracut
#: package Conflicts with initramfs-tools and would replace the distribution's generator).
DRACUT_INSTALL = (
    "install it there without side effects (Debian: apt install --no-install-recommends dracut-core, "
    "beside initramfs-tools; Fedora/RHEL: dnf install dracut)"
)
#: The Debian package of each GRUB tool apply runs (Fedora/RHEL: grub2-tools, grub2-tools-minimal).
GRUB_PACKAGES = {"mkconfig": "grub2-common", "reboot": "grub2-common", "set-default": "grub2-common"}
#: What to install for an interpreter a tool of the target names.
INTERPRETER_PACKAGES = {"sh": "dash (Fedora/RHEL: bash)", "bash": "bash", "env": "coreutils"}


def programs_apply_runs(plan: Plan, ctx: Context) -> list[tuple[str, str]]:
    """(program, what apply runs it for) of every command apply runs in the target, as
    tui/transaction.py and tui/bootloader.py run them; dracut itself is _check_target's."""
    from tui import bootloader

    bl = ctx.bootloader
    assert bl is not None
    programs = [("dracut", "builds the initramfs")]
    if bl.style == "":
        return programs
    if bl.style == "grub":
        programs += [(bl.tool("mkconfig"), "writes grub.cfg"), (bl.tool("script-check"), "checks it")]
    tool = {"once": "reboot", "default": "set-default"}.get(plan.boot)
    if tool and bl.env_on_esp:
        programs.append((bl.tool("editenv"), f"sets --boot {plan.boot} in {bl.grubenv}"))
    elif tool:
        programs.append((bl.tool(tool), f"sets --boot {plan.boot}"))
    elif any(v.startswith(bootloader.ENTRY_PREFIX) for v in bootloader.grubenv(ctx.host, bl).values()):
        programs.append((bl.tool("editenv"), "clears the boot mode an earlier apply set"))
    return programs


def _check_tools(plan: Plan, ctx: Context, problems: list[Problem]) -> None:
    """Each program apply will run in the target, and the interpreter each script names (and,
    in a chroot, /bin/sh), must be there: one line for each missing one, with what to install."""
    host = ctx.host
    missing: dict[str, str] = {}  # what is missing -> the message
    if not host.is_live and not host.executable("/bin/sh"):
        missing["/bin/sh"] = (
            "is not in the target, and the commands apply runs there need it; "
            f"install {INTERPRETER_PACKAGES['sh']} there"
        )
    for program, why in programs_apply_runs(plan, ctx):
        path = host.which(program)
        if path is None:
            if program != "dracut":  # _check_target says that one
                package = GRUB_PACKAGES.get(program.split("-", 1)[1], "grub-common")
                missing[program] = (
                    f"is not in the target's PATH ({why}); install it there (Debian: {package}; "
                    "Fedora/RHEL: grub2-tools, grub2-tools-minimal)"
                )
            continue
        words = host.interpreter(path)
        needed = words[:1] + (words[1:2] if words[:1] and words[0].endswith("/env") else [])
        for word in needed:
            found = host.executable(word) if word.startswith("/") else host.which(word) is not None
            if not found and word not in missing:
                name = word.rsplit("/", 1)[-1]
                what = INTERPRETER_PACKAGES.get(name, f"the package that has {shown(name)}")
                missing[word] = f"is not in the target, and {path} ({why}) runs with it; install {what} there"
    for word, message in missing.items():
        problems.append(Problem("tools", word, message))


def _check_bootloader(plan: Plan, ctx: Context, problems: list[Problem]) -> None:
    from tui import bootloader

    bl = ctx.bootloader
    assert bl is not None
    if bl.style == "":
        problems.append(
            Problem(
                "bootloader",
                str(ctx.host.root),
                "no GRUB found in the target "
                "(grub-mkconfig or grub2-mkconfig); accepted: GRUB with /etc/grub.d, "
                "or GRUB with BLS entries in /boot/loader/entries",
            )
        )
        return
    if plan.boot == "once" and ctx.probes:
        reason = bootloader.check_once(ctx.host, bl)
        if reason:
            problems.append(Problem("boot", plan.boot, f"{reason}; accepted here: menu, or default"))
    elif plan.boot == "default":
        reason = bootloader.check_default(ctx.host, bl)
        if reason:
            problems.append(Problem("boot", plan.boot, reason))
