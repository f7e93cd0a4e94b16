"""What each step decides, its keys, and what the choice does at boot: the text F1 shows."""

KEYS = (
    "Keys: Ctrl+N next step · Escape back · Ctrl+P command palette (jump to a step) · "
    "F1 this help · Ctrl+Q quit. The mouse works too."
)

HELP = {
    "overview": (
        "Overview\n\n"
        "tmpfs-root makes this system boot with its root filesystem unpacked into RAM (a tmpfs), "
        "from an archive of the root kept on a volume. It adds a dracut module, builds a separate "
        "initramfs with it and adds a GRUB entry; your distro's own initramfs and entries stay.\n\n"
        "The checks: root (the conversion needs it), dracut in the target, GRUB, the kernels, the "
        "RAM the root will live in, and free space in /boot for the initramfs images. A failed "
        "check stops a real conversion; a dry run (--dry-run) walks on with it shown.\n\n"
        "When tmpfs-root is installed already: Modify loads its plan, Status checks it, Remove "
        "undoes it."
    ),
    "source": (
        "Source volume\n\n"
        "The volume that holds the root image: a partition or volume (by UUID=, the default and "
        "safest, PARTUUID=, LABEL=, PARTLABEL= or its path), or an NFS export (NFS tab).\n\n"
        "At boot the initramfs waits for this volume, mounts it read-only, reads the image and "
        "unmounts it: root=tmpfs:<source> on the kernel command line. A label that several "
        "devices carry is flagged: the boot could take the wrong one. For NFS the network comes "
        "up in the initramfs (ip=, dhcp by default)."
    ),
    "image": (
        "Image\n\n"
        "The root-filesystem archive on the source volume: tar, or tar compressed with zstd (the "
        "fastest to unpack), gzip, xz, bzip2 or lz4, recognised by its first bytes. Enter on an "
        "archive reads it once: sizes and file count, and the tmpfs size to give it.\n\n"
        "Pin its sha256: the boot hashes the image while unpacking and refuses any other one. "
        "'Create an image from this host' packs this system (tmpfs-root image create).\n\n"
        "At boot: rd.tmpfs.imgfile=<path> (and rd.tmpfs.sha256=)."
    ),
    "size": (
        "Size\n\n"
        "The tmpfs size: a ceiling, not an allocation; RAM is used as files fill it. Accepted: "
        "N, N followed by k, m, g, t, p or e, or N% of RAM. Empty: the boot decides, the image's "
        "size plus half again (at least 256 MiB more), at most 90% of RAM.\n\n"
        "At boot the initramfs checks that the image fits, before unpacking anything: "
        "rd.tmpfs.size=<size>."
    ),
    "boot": (
        "Boot\n\n"
        "Kernels: one initramfs each, rebuilt by a kernel hook when kernels are installed.\n\n"
        "Boot mode: once (recommended) boots the entry on the next reboot only, and a failed boot "
        "reboots into your normal entry (rd.shell=0 rd.emergency=reboot panic=10); menu only adds "
        "the entry; default makes every boot use it until you remove tmpfs-root.\n\n"
        "Extra arguments are added after your GRUB_CMDLINE_LINUX ones, which the entry carries too."
    ),
    "review": (
        "Review\n\n"
        "Exactly what Apply will do: the kernel command line, every file it writes (Enter shows "
        "its content), every command it runs. Save plan writes it as TOML, for "
        "`tmpfs-root apply --plan FILE` on this or other machines. Apply asks once more."
    ),
    "apply": (
        "Apply\n\n"
        "The steps run one by one, each command's output below. If any step fails, or you press "
        "Escape, the running command is stopped and every step done so far is undone: the "
        "system is as it was. A log of the run is kept in /var/log/tmpfs-root/tmpfs-root.log."
    ),
}


def help_text(step: str) -> str:
    return f"{HELP[step]}\n\n{KEYS}"
