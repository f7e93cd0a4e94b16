"""Boot entries: what bootloader the target uses, our entries in it, and the boot modes.

Two styles, detected from the target itself:

``grub``
    GRUB with ``/etc/grub.d`` (Debian, Ubuntu, RHEL/Fedora without BLS).  Our
    entries come from a real shell script, ``/etc/grub.d/42_tmpfs-root``
    (shipped as ``tui/grub/42_tmpfs-root``), run by the target's own
    ``grub-mkconfig``; it reads the title and kernel arguments from
    ``/etc/tmpfs-root/grub.env`` and emits one ``menuentry`` per kernel that
    has a tmpfs-root initramfs, with the stable id ``tmpfs-root-<kver>``.  The
    configuration is generated to a temporary name, checked with
    ``grub-script-check`` and renamed over the real one, so a failure never
    leaves a broken grub.cfg.
``bls``
    Boot Loader Specification entries (RHEL 8+, Fedora: ``/boot/loader/entries``
    with ``GRUB_ENABLE_BLSCFG=true``): one entry file of our own per kernel,
    ``tmpfs-root-<kver>.conf`` (its id is the file name); the distro's entries
    are never touched and no configuration is regenerated.

Boot modes: ``menu`` (the entry only), ``once`` (``grub-reboot``: the next
boot only, refused when GRUB cannot clear it at boot) and ``default``
(``grub-set-default``, with ``GRUB_DEFAULT=saved`` set through a drop-in when
the target supports ``/etc/default/grub.d``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tui.host import Host, HostError, LineCallback
from tui.owned import BLS_DIR, DEFAULT_DROPIN, ENTRY_PREFIX, GRUB_ENV, GRUB_SCRIPT, KVER_RE

GRUB_SCRIPT_SOURCE = Path(__file__).parent / "grub" / "42_tmpfs-root"
#: Where the EFI system partition's vendor directories are, in the target.
ESP_DIR = "/boot/efi/EFI"

#: Where GRUB cannot write its environment block at boot (so a boot-once is never cleared).
_UNWRITABLE_FS = {"btrfs", "zfs"}  # GRUB refuses save_env on these (as its 00_header knows)
_UNWRITABLE_ABSTRACTIONS = ("lvm", "diskfilter", "raid", "mdraid", "cryptodisk", "luks", "zfs")


class BootloaderError(HostError):
    """The target's bootloader cannot do what was asked; one line for the user."""


def entry_id(kver: str) -> str:
    return f"{ENTRY_PREFIX}{kver}"


@dataclass
class Bootloader:
    style: str  # "grub", "bls", or "" when no GRUB was found
    prefix: str  # tool prefix: "grub" (Debian) or "grub2" (RHEL, Fedora, SUSE)
    grub_dir: str  # /boot/grub or /boot/grub2
    config: str  # the grub.cfg GRUB reads at boot

    @property
    def grubenv(self) -> str:
        """The environment block GRUB loads at boot: in its prefix, the directory of the
        grub.cfg it reads; on the ESP when that is the real configuration there."""
        if self.config.startswith(ESP_DIR + "/"):
            return self.config.rsplit("/", 1)[0] + "/grubenv"
        return f"{self.grub_dir}/grubenv"

    @property
    def env_on_esp(self) -> bool:
        """grubenv is not the one grub-reboot and grub-set-default write (GRUB's directory)."""
        return self.grubenv != f"{self.grub_dir}/grubenv"

    def tool(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def describe(self) -> str:
        if self.style == "bls":
            return f"GRUB with BLS entries ({BLS_DIR}, {self.config})"
        if self.style == "grub":
            return f"GRUB ({self.config} by {self.tool('mkconfig')})"
        return "no GRUB found"

    def to_json(self) -> dict:
        return {"style": self.style, "config": self.config, "grubenv": self.grubenv, "tools": self.prefix}


def detect(host: Host) -> Bootloader:
    """The target's bootloader, from its files and tools."""
    prefix = "grub2" if host.which("grub2-mkconfig") and not host.which("grub-mkconfig") else "grub"
    grub_dir = "/boot/grub2" if host.is_dir("/boot/grub2") and not host.is_dir("/boot/grub") else "/boot/grub"
    config = _config_path(host, grub_dir)
    if not host.which(f"{prefix}-mkconfig") and not host.exists(config):
        return Bootloader("", prefix, grub_dir, config)
    if host.is_dir(BLS_DIR) and _default_grub(host).get("GRUB_ENABLE_BLSCFG") == "true":
        return Bootloader("bls", prefix, grub_dir, config)
    return Bootloader("grub", prefix, grub_dir, config)


def _config_path(host: Host, grub_dir: str) -> str:
    """grub.cfg: in the GRUB directory, unless an EFI system partition holds the real one
    (RHEL 8 on EFI) rather than a stub that loads it."""
    efi = ESP_DIR
    if host.is_dir(efi):
        for vendor in host.listdir(efi):
            candidate = f"{efi}/{vendor}/grub.cfg"
            if host.exists(candidate) and "configfile" not in host.read_text(candidate):
                return candidate
    return f"{grub_dir}/grub.cfg"


def _default_grub(host: Host) -> dict[str, str]:
    """Simple assignments in /etc/default/grub and its drop-ins (later ones win)."""
    values: dict[str, str] = {}
    paths = ["/etc/default/grub"]
    if host.is_dir("/etc/default/grub.d"):
        paths += [f"/etc/default/grub.d/{n}" for n in host.listdir("/etc/default/grub.d") if n.endswith(".cfg")]
    for path in paths:
        try:
            text = host.read_text(path)
        except OSError:
            continue
        for m in re.finditer(r"^\s*(GRUB_[A-Z_]+)=(.*)$", text, re.M):
            values[m.group(1)] = m.group(2).strip().strip("\"'")
    return values


#: Arguments of the normal entry that name its root: not carried into tmpfs-root's entry
#: (the same list as in grub/42_tmpfs-root).
NOT_INHERITED = ("root=", "rootflags=", "rootfstype=", "rd.tmpfs.")


def inherited_args(host: Host) -> list[str]:
    """The admin's kernel arguments (GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT in
    /etc/default/grub and its drop-ins) that tmpfs-root's entry carries too, in order."""
    values = _default_grub(host)
    words = f"{values.get('GRUB_CMDLINE_LINUX', '')} {values.get('GRUB_CMDLINE_LINUX_DEFAULT', '')}".split()
    return [w for w in words if w not in ("ro", "rw") and not w.startswith(NOT_INHERITED)]


def supports_dropins(host: Host, bl: Bootloader) -> bool:
    """Whether the target's grub-mkconfig reads /etc/default/grub.d/*.cfg (Debian, Ubuntu)."""
    mkconfig = host.which(bl.tool("mkconfig"))
    return mkconfig is not None and "default/grub.d" in host.read_text(mkconfig)  # ${sysconfdir}/default/grub.d


# ------------------------------------------------------------ grubenv
def parse_grubenv(text: str) -> dict[str, str]:
    """The variables of a GRUB environment block."""
    env = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key] = value
    return env


def grubenv(host: Host, bl: Bootloader) -> dict[str, str]:
    try:
        return parse_grubenv(host.read_text(bl.grubenv))
    except OSError:
        return {}


def once_refusal(fs: str, abstraction: str) -> str | None:
    """Why a boot-once cannot work with GRUB's directory on *fs* / *abstraction*, or None."""
    fs = fs.strip()
    layers = abstraction.split()
    bad = [a for a in layers if a.startswith(_UNWRITABLE_ABSTRACTIONS)]
    if bad:
        return f"is on {' '.join(bad)}, where GRUB cannot clear the one-time entry at boot"
    if fs in _UNWRITABLE_FS:
        return f"is on {fs}, where GRUB cannot clear the one-time entry at boot"
    return None


def check_once(host: Host, bl: Bootloader) -> str | None:
    """Why ``--boot once`` cannot work on this target (GRUB must write grubenv at boot), or None."""
    if bl.style == "":
        return None
    probe = host.which(bl.tool("probe"))
    if probe is None:
        return None
    where = envdir(host, bl)
    fs = host.run([bl.tool("probe"), "--target=fs", where], query=True, check=False)
    abstraction = host.run([bl.tool("probe"), "--target=abstraction", where], query=True, check=False)
    if fs.returncode != 0:
        return None  # cannot tell (a directory target without a device): grub-reboot will say
    reason = once_refusal(fs.output, abstraction.output if abstraction.returncode == 0 else "")
    return f"{where} (where grubenv is) {reason}" if reason else None


def envdir(host: Host, bl: Bootloader) -> str:
    """The directory grubenv really is in, as the target sees it: GRUB's own directory, or
    wherever a link there leads (RHEL's EFI layouts keep it on the ESP)."""
    try:
        real = host.fs.real(bl.grubenv)
    except OSError:
        return bl.grub_dir
    inside = "/" + str(real.relative_to(host.root)) if not host.is_live else str(real)
    return inside.rsplit("/", 1)[0] or "/"


# -------------------------------------------------------------- grub.d style
def grub_env(title: str, cmdline: list[str]) -> str:
    return (
        "# Written by tmpfs-root; read by /etc/grub.d/42_tmpfs-root.\n"
        f"TMPFS_ROOT_TITLE={shlex.quote(title)}\n"
        f"TMPFS_ROOT_CMDLINE={shlex.quote(' '.join(cmdline))}\n"
    )


# -------------------------------------------------------------- BLS style
def bls_path(kver: str) -> str:
    return f"{BLS_DIR}/{entry_id(kver)}.conf"


def bls_prefix(host: Host) -> str:
    """How BLS entries name files in /boot: "/" when /boot is its own filesystem, else "/boot/".

    Taken from the distro's own entries when there are any (as grubby --copy-default would)."""
    for name in host.listdir(BLS_DIR) if host.is_dir(BLS_DIR) else []:
        if name.startswith(ENTRY_PREFIX) or not name.endswith(".conf"):
            continue
        for line in host.read_text(f"{BLS_DIR}/{name}").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "linux" and "vmlinuz" in value:
                return value.strip()[: value.strip().rindex("vmlinuz")]
    return "/" if host.is_mountpoint("/boot") else "/boot/"


def bls_entry(title: str, kver: str, cmdline: list[str], prefix: str) -> str:
    """A BLS entry; the kernel hook writes the very same text (tested)."""
    return (
        f"title {title} ({kver})\n"
        f"version {kver}\n"
        f"linux {prefix}vmlinuz-{kver}\n"
        f"initrd {prefix}initrd-tmpfs-root-{kver}.img\n"
        f"options {' '.join(cmdline)}\n"
        "grub_users $grub_users\n"
        "grub_arg --unrestricted\n"
        "grub_class kernel\n"
    )


def parse_bls(text: str) -> dict[str, str]:
    entry = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and not key.startswith("#"):
            entry[key] = value.strip()
    return entry


def our_bls_entries(host: Host) -> list[str]:
    return [
        f"{BLS_DIR}/{n}"
        for n in host.listdir(BLS_DIR)
        if n.startswith(ENTRY_PREFIX)
        and n.endswith(".conf")
        and KVER_RE.fullmatch(n[len(ENTRY_PREFIX) : -len(".conf")])
    ]


# -------------------------------------------------------------------- writing
class EntrySpec(Protocol):
    """What an entry is written from (the plan's Resolved has it; the bootloader needs no more
    of the plan, and does not import it)."""

    title: str
    cmdline: list[str]  # tmpfs-root's own arguments

    @property
    def entry_cmdline(self) -> list[str]: ...  # the whole line: the admin's arguments, then ours


def write_entries(host: Host, bl: Bootloader, resolved: EntrySpec, kernels: list[str], boot: str) -> bool:
    """Write our entry files (not the generated configuration); returns whether any changed.

    A BLS entry carries the whole command line (the admin's arguments, then ours); with
    /etc/grub.d, grub.env holds ours and 42_tmpfs-root adds the admin's when grub-mkconfig
    runs, so a later change to /etc/default/grub reaches our entry too."""
    title, cmdline = resolved.title, resolved.cmdline
    changed = False
    if bl.style == "bls":
        prefix = bls_prefix(host)
        wanted = {bls_path(k): bls_entry(title, k, resolved.entry_cmdline, prefix) for k in kernels}
        for path in our_bls_entries(host):
            if path not in wanted:
                changed |= host.remove(path)
        for path, text in wanted.items():
            changed |= host.write_file(path, text)
        return changed
    changed |= host.write_file(GRUB_ENV, grub_env(title, cmdline))
    changed |= host.write_file(GRUB_SCRIPT, GRUB_SCRIPT_SOURCE.read_bytes(), 0o755)
    if boot == "default" and needs_default_dropin(host):
        reason = check_default(host, bl)
        if reason:
            raise BootloaderError(f"--boot 'default': {reason}")
        changed |= host.write_file(
            DEFAULT_DROPIN,
            "# Written by tmpfs-root (--boot default); `tmpfs-root remove` deletes it.\nGRUB_DEFAULT=saved\n",
        )
    elif boot != "default":
        changed |= host.remove(DEFAULT_DROPIN)
    return changed


def needs_default_dropin(host: Host) -> bool:
    return _default_grub(host).get("GRUB_DEFAULT") != "saved" or host.exists(DEFAULT_DROPIN)


def check_default(host: Host, bl: Bootloader) -> str | None:
    """Why ``--boot default`` cannot work on this target, or None."""
    if bl.style == "grub" and needs_default_dropin(host) and not supports_dropins(host, bl):
        return (
            "GRUB_DEFAULT is not 'saved' in /etc/default/grub and this GRUB reads no drop-ins; "
            "set GRUB_DEFAULT=saved there; accepted here: once, or menu"
        )
    if bl.style == "bls" and _default_grub(host).get("GRUB_DEFAULT") != "saved":
        return "GRUB_DEFAULT is not 'saved' in /etc/default/grub; set it there; accepted here: once, or menu"
    return None


def remove_entries(host: Host) -> None:
    for path in our_bls_entries(host):
        host.remove(path)
    for path in (GRUB_SCRIPT, GRUB_ENV, DEFAULT_DROPIN):
        host.remove(path)


def regenerate(
    host: Host, bl: Bootloader, on_line: LineCallback | None = None, expect: list[str] | None = None
) -> None:
    """Regenerate grub.cfg with the target's own grub-mkconfig; checked (grub-script-check, and
    an entry for each kernel of *expect*) before it replaces the old one."""
    if bl.style != "grub":
        return
    new = f"{bl.config}.tmpfs-root"
    scratch = [new, f"{new}.new"]  # grub-mkconfig -o X writes X.new first, and leaves it on failure
    for path in scratch:
        host.preserve(path)  # a killed run leaves them: the journal knows to remove them
    try:
        host.run([bl.tool("mkconfig"), "-o", new], on_line=on_line)
        host.run([bl.tool("script-check"), new], on_line=on_line)
        check_entries(host, bl, expect or [], new)
        host.copy_mode(bl.config, new)  # a grub.cfg of mode 0600 (a password hash) stays 0600
    except BaseException:
        for path in scratch:
            host.discard(path)
        raise
    host.rename(new, bl.config)


def config_has_entry(host: Host, bl: Bootloader, kver: str, config: str | None = None) -> bool:
    """Whether the configuration GRUB reads (*config*: another one, e.g. a new grub.cfg not yet
    renamed) holds tmpfs-root's entry for *kver*: its BLS file, or its id in grub.cfg."""
    if bl.style == "bls":
        return host.exists(bls_path(kver))
    try:
        return f"'{entry_id(kver)}'" in host.read_text(config or bl.config)
    except OSError:
        return False


def check_entries(host: Host, bl: Bootloader, kernels: list[str], config: str | None = None) -> None:
    """Read back what was written (a dry run wrote nothing, and is not checked): an entry for
    each of *kernels*, or one line saying why not (the step fails, and is rolled back)."""
    missing = [k for k in kernels if not host.dry_run and not config_has_entry(host, bl, k, config)]
    if not missing:
        return
    if bl.style == "bls":
        raise BootloaderError(f"no tmpfs-root entry in {BLS_DIR}: {bls_path(missing[0])} is not there")
    raise BootloaderError(
        f"{bl.tool('mkconfig')} wrote no tmpfs-root entry for {', '.join(missing)}: {GRUB_SCRIPT} did not "
        f"run (the target's {bl.tool('mkconfig')} must run the executable scripts of /etc/grub.d); "
        f"{bl.config} is left as it was"
    )


# --------------------------------------------------------------- boot modes
def set_boot_once(host: Host, bl: Bootloader, kver: str, on_line: LineCallback | None = None) -> None:
    _set_env(host, bl, "reboot", "next_entry", entry_id(kver), on_line)


def set_default(host: Host, bl: Bootloader, kver: str, on_line: LineCallback | None = None) -> None:
    _set_env(host, bl, "set-default", "saved_entry", entry_id(kver), on_line)


def _set_env(host: Host, bl: Bootloader, tool: str, key: str, value: str, on_line: LineCallback | None) -> None:
    """grub-reboot / grub-set-default write GRUB's directory's grubenv; where GRUB reads its
    configuration and environment from the ESP instead, the same variable is set there."""
    host.preserve(bl.grubenv)
    if bl.env_on_esp:
        host.run([bl.tool("editenv"), bl.grubenv, "set", f"{key}={value}"], on_line=on_line)
    else:
        host.run([bl.tool(tool), value], on_line=on_line)


def clear_boot_modes(
    host: Host, bl: Bootloader, default_before: str | None, on_line: LineCallback | None = None
) -> None:
    """Undo our boot-once and saved default, if they still point at our entries."""
    env = grubenv(host, bl)
    if env.get("next_entry", "").startswith(ENTRY_PREFIX):
        host.preserve(bl.grubenv)
        host.run([bl.tool("editenv"), bl.grubenv, "unset", "next_entry"], on_line=on_line)
    if env.get("saved_entry", "").startswith(ENTRY_PREFIX):
        host.preserve(bl.grubenv)
        if default_before:
            host.run([bl.tool("editenv"), bl.grubenv, "set", f"saved_entry={default_before}"], on_line=on_line)
        else:
            host.run([bl.tool("editenv"), bl.grubenv, "unset", "saved_entry"], on_line=on_line)
