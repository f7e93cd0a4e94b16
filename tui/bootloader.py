"""Boot entries: a GRUB script in /etc/grub.d, regeneration of grub.cfg, boot-once.

The script (``tui/grub/42_tmpfs-root``) is a real shell file run by
grub-mkconfig; it reads the title and kernel arguments from
``/etc/tmpfs-root/grub.env`` and emits one entry per kernel that has a
tmpfs-root initramfs, with the stable id ``tmpfs-root-<kver>``.
"""

from __future__ import annotations

from pathlib import Path

from tui.host import Host, LineCallback

GRUB_SCRIPT_SOURCE = Path(__file__).parent / "grub" / "42_tmpfs-root"
GRUB_SCRIPT = "/etc/grub.d/42_tmpfs-root"
GRUB_ENV = "/etc/tmpfs-root/grub.env"


def entry_id(kver: str) -> str:
    return f"tmpfs-root-{kver}"


def grub_config_path(host: Host) -> str:
    """The grub.cfg the target's distro uses (Debian /boot/grub, RHEL /boot/grub2)."""
    for candidate in ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"):
        if host.exists(candidate):
            return candidate
    return "/boot/grub2/grub.cfg" if host.is_dir("/boot/grub2") else "/boot/grub/grub.cfg"


def regenerate_argv(host: Host) -> list[str]:
    if host.which("grub-mkconfig"):
        return ["grub-mkconfig", "-o", grub_config_path(host)]
    if host.which("grub2-mkconfig"):
        return ["grub2-mkconfig", "-o", grub_config_path(host)]
    return ["grub-mkconfig", "-o", grub_config_path(host)]


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def grub_env(title: str, cmdline: list[str]) -> str:
    return ("# Written by tmpfs-root; read by /etc/grub.d/42_tmpfs-root.\n"
            f"TMPFS_ROOT_TITLE={_sh_quote(title)}\n"
            f"TMPFS_ROOT_CMDLINE={_sh_quote(' '.join(cmdline))}\n")


def write_entry(host: Host, title: str, cmdline: list[str]) -> None:
    host.write_file(GRUB_ENV, grub_env(title, cmdline))
    host.write_file(GRUB_SCRIPT, GRUB_SCRIPT_SOURCE.read_bytes(), 0o755)


def regenerate(host: Host, on_line: LineCallback | None = None) -> None:
    argv = regenerate_argv(host)
    host.preserve(argv[-1])
    host.run(argv, on_line=on_line)


def set_boot_once(host: Host, kver: str, on_line: LineCallback | None = None) -> None:
    tool = "grub2-reboot" if host.which("grub2-reboot") and not host.which("grub-reboot") else "grub-reboot"
    env = "/boot/grub2/grubenv" if tool == "grub2-reboot" else "/boot/grub/grubenv"
    host.preserve(env)
    host.run([tool, entry_id(kver)], on_line=on_line)
