"""The one list of what tmpfs-root owns in a target, and what it may touch at all.

Every path the tool writes, backs up or removes is named here, as a fixed path
or a pattern over a kernel version. The journal of an interrupted run and the
state file are read from the target, so they are not trusted: an entry naming
anything else (``/home``, ``/etc/shadow``) is refused, never acted on.

* :func:`owns`: files tmpfs-root creates and removes (module, hooks, entries,
  initramfs images, its state);
* :func:`may_touch`: those, plus the files of the bootloader it regenerates or
  edits through the target's own tools (grub.cfg, grubenv) and keeps a backup of;
* :func:`may_make_dir`: directories it may have created (and so may remove when
  empty), the parents of the above and its backup area.
"""

from __future__ import annotations

import posixpath
import re

#: A kernel version as tmpfs-root accepts it (in file names, entry ids, grub.cfg).
KVER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")

STATE_DIR = "/etc/tmpfs-root"
PLAN_FILE = f"{STATE_DIR}/plan.toml"
STATE_FILE = f"{STATE_DIR}/state.json"
GRUB_ENV = f"{STATE_DIR}/grub.env"
HOOK_ENV = f"{STATE_DIR}/hook.env"
VAR_DIR = "/var/lib/tmpfs-root"
BACKUP_DIR = f"{VAR_DIR}/backup"
JOURNAL = f"{BACKUP_DIR}/journal.json"
GRUB_SCRIPT = "/etc/grub.d/42_tmpfs-root"
DEFAULT_DROPIN = "/etc/default/grub.d/tmpfs-root.cfg"
DEBIAN_HOOKS = ["/etc/kernel/postinst.d/z50-tmpfs-root", "/etc/kernel/postrm.d/z50-tmpfs-root"]
KERNEL_INSTALL_HOOK = "/etc/kernel/install.d/90-tmpfs-root.install"
MODULE_DIRNAME = "90tmpfs-root"
MODULES_DIRS = ("/usr/lib/dracut/modules.d", "/lib/dracut/modules.d")
MODULE_DIRS = tuple(f"{d}/{MODULE_DIRNAME}" for d in MODULES_DIRS)
INITRD_TEMPLATE = "/boot/initrd-tmpfs-root-{kver}.img"
KERNEL_TEMPLATE = "/boot/vmlinuz-{kver}"
BLS_DIR = "/boot/loader/entries"
ENTRY_PREFIX = "tmpfs-root-"
#: The bootloader's own directories (grub.cfg, grubenv live there).
GRUB_DIRS = ("/boot/grub", "/boot/grub2")

#: Directories of tmpfs-root's own, in which no symbolic link is ever followed.
STRICT_DIRS = (STATE_DIR, VAR_DIR, *MODULE_DIRS)

_FIXED = {PLAN_FILE, STATE_FILE, GRUB_ENV, HOOK_ENV, GRUB_SCRIPT, DEFAULT_DROPIN, *DEBIAN_HOOKS, KERNEL_INSTALL_HOOK}
_KV = KVER_RE.pattern
_PATTERNS = [
    re.compile(r"/boot/initrd-tmpfs-root-" + _KV + r"\.img(\.new)?"),
    re.compile(re.escape(BLS_DIR) + "/tmpfs-root-" + _KV + r"\.conf"),
    re.compile("(" + "|".join(re.escape(d) for d in MODULE_DIRS) + r")/[A-Za-z0-9._-]{1,64}"),
]
#: grub.cfg (in GRUB's directory or an EFI vendor directory), our scratch names for it,
#: and grubenv: regenerated or edited by the target's own tools, backed up by us.
_BOOTLOADER = re.compile(
    r"(/boot/grub2?|/boot/efi/EFI/[A-Za-z0-9._-]{1,64})/"
    r"(grub\.cfg(\.tmpfs-root(\.new)?)?|grubenv)"
)


def normal(path: str) -> bool:
    """An absolute path without '.', '..', empty components or control characters."""
    return (
        isinstance(path, str)
        and path.startswith("/")
        and len(path) < 4096
        and posixpath.normpath(path) == path
        and path.isprintable()
        and "//" not in path
    )


def owns(path: str) -> bool:
    """Whether *path* is a file tmpfs-root creates (and may remove)."""
    return normal(path) and (path in _FIXED or any(p.fullmatch(path) for p in _PATTERNS))


def may_touch(path: str) -> bool:
    """Whether tmpfs-root may back up and restore *path*: its own files, grub.cfg, grubenv."""
    return owns(path) or (normal(path) and _BOOTLOADER.fullmatch(path) is not None)


def _ancestors(path: str) -> list[str]:
    out = []
    while path not in ("/", ""):
        path = posixpath.dirname(path)
        if path != "/":
            out.append(path)
    return out


_DIRS = {
    d
    for p in [*_FIXED, *(m + "/x" for m in MODULE_DIRS), BLS_DIR + "/x", JOURNAL, *(g + "/x" for g in GRUB_DIRS)]
    for d in _ancestors(p)
}


def may_make_dir(path: str) -> bool:
    """Whether *path* is a directory tmpfs-root may have made (and so may remove when empty)."""
    if not normal(path):
        return False
    return path in _DIRS or path.startswith(BACKUP_DIR + "/")


def backup_path(path: str) -> str:
    """Where the backup of *path* is kept (computed, never read from a journal)."""
    return BACKUP_DIR + path
