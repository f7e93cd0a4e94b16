"""Kernel hooks: new kernels get their tmpfs-root initramfs and entry, removed ones lose them.

One real shell file, ``tui/hooks/tmpfs-root-kernel-hook``, installed where the
target's kernel packages run hooks:

* ``/etc/kernel/postinst.d`` and ``/etc/kernel/postrm.d`` (Debian, Ubuntu, and
  RHEL/Fedora without BLS), named ``z50-tmpfs-root`` so it runs after the
  distro's own initramfs hook and before ``zz-update-grub``;
* ``/etc/kernel/install.d/90-tmpfs-root.install`` (kernel-install, on BLS targets).

It reads ``/etc/tmpfs-root/hook.env``: the dracut options of the plan, and for
BLS the title, command line and path prefix of the entry it writes.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from tui.bootloader import Bootloader, bls_prefix
from tui.host import Host
from tui.owned import DEBIAN_HOOKS, HOOK_ENV, KERNEL_INSTALL_HOOK

HOOK_SOURCE = Path(__file__).parent / "hooks" / "tmpfs-root-kernel-hook"
ALL_HOOKS = [*DEBIAN_HOOKS, KERNEL_INSTALL_HOOK]


def hook_paths(bl: Bootloader) -> list[str]:
    return [KERNEL_INSTALL_HOOK] if bl.style == "bls" else list(DEBIAN_HOOKS)


def hook_env(host: Host, bl: Bootloader, dracut_options: list[str], title: str, cmdline: list[str]) -> str:
    values = {
        "TMPFS_ROOT_DRACUT_ARGS": " ".join(shlex.quote(a) for a in dracut_options),
        "TMPFS_ROOT_BLS": "1" if bl.style == "bls" else "0",
        "TMPFS_ROOT_TITLE": title,
        "TMPFS_ROOT_CMDLINE": " ".join(cmdline),
        "TMPFS_ROOT_BLS_PREFIX": bls_prefix(host) if bl.style == "bls" else "/boot/",
    }
    return "# Written by tmpfs-root apply; read by its kernel hooks.\n" + "".join(
        f"{k}={shlex.quote(v)}\n" for k, v in values.items()
    )


def install_hooks(host: Host, bl: Bootloader, dracut_options: list[str], title: str, cmdline: list[str]) -> bool:
    """Write the hooks and their settings; returns whether anything changed."""
    changed = host.write_file(HOOK_ENV, hook_env(host, bl, dracut_options, title, cmdline))
    wanted = hook_paths(bl)
    for path in ALL_HOOKS:
        if path not in wanted:
            changed |= host.remove(path)
    for path in wanted:
        changed |= host.write_file(path, HOOK_SOURCE.read_bytes(), 0o755)
    return changed


def remove_hooks(host: Host) -> None:
    for path in [*ALL_HOOKS, HOOK_ENV]:
        host.remove(path)
