"""The test that proves the product: a real disk, GRUB installed on it for BIOS,
`tmpfs-root apply --root` on it, then QEMU boots the disk itself: SeaBIOS → GRUB →
our entry (chosen by grub-reboot) → our initramfs → the target's own systemd on a
tmpfs root, checked from the serial console."""

import re

import pytest

from tests.infra import mounted_disk, qemu_boot, run_cli, system_disk_copy
from tui.bootloader import parse_grubenv

pytestmark = [pytest.mark.qemu, pytest.mark.chroot, pytest.mark.needs("qemu-system-x86_64")]

CHECK_UNIT = """[Unit]
Description=tmpfs-root test: report the root filesystem, then power off
ConditionKernelCommandLine=rd.tmpfs.imgfile
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "TMPFS-ROOT-CHECK root=$(findmnt -n -o FSTYPE,SOURCE /) init=$(readlink /proc/1/exe) host=$(cat /etc/hostname)" > /dev/ttyS0'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""
SLIM = [
    "/usr/lib/modules/*",
    "/boot/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
    "/var/cache/apt/*",
]


def test_grub_boots_our_entry_once_into_the_targets_systemd_on_tmpfs(tmp_path):
    with system_disk_copy(tmp_path, bootable=True) as copy:
        disk, mnt = copy.image, copy.mnt
        unit = mnt / "etc/systemd/system/tmpfs-root-check.service"
        unit.write_text(CHECK_UNIT)
        (mnt / "etc/systemd/system/multi-user.target.wants/tmpfs-root-check.service").symlink_to(
            "/etc/systemd/system/tmpfs-root-check.service"
        )
        (mnt / "images").mkdir()
        packed = run_cli(
            "image",
            "create",
            "--from",
            mnt,
            "--output",
            mnt / "images/rootfs.tar.zst",
            *[a for p in SLIM for a in ("--exclude", p)],
            timeout=600,
        )
        assert packed.returncode == 0, packed.stderr
        applied = run_cli(
            "apply",
            "--root",
            mnt,
            "--source",
            f"UUID={copy.uuid}",
            "--image",
            "images/rootfs.tar.zst",
            "--append",
            "console=ttyS0",
            "--no-hostonly",
            "--boot",
            "once",
            "--yes",
            timeout=900,
        )
        assert applied.returncode == 0, applied.stderr
        env = parse_grubenv((mnt / "boot/grub/grubenv").read_text())
        assert env["next_entry"].startswith("tmpfs-root-")
    log = tmp_path / "console.log"
    boot = qemu_boot(None, None, "", [disk], log, timeout=900, memory="1536M", snapshot=False)
    checks = boot.lines("TMPFS-ROOT-CHECK")
    assert checks, f"no check line; console tail:\n{boot.log[-3000:]}"
    assert re.search(r"root=tmpfs\s+tmpfs ", checks[-1]), checks  # fstype tmpfs, source "tmpfs"
    assert "init=/usr/lib/systemd/systemd" in checks[-1], checks
    assert "host=tmpfs-root-test" in checks[-1]
    assert "rd.tmpfs.imgfile=images/rootfs.tar.zst" in boot.log  # the kernel's command line: our entry
    assert boot.returncode == 0  # powered off by the unit, not killed at the timeout
    print(f"full chain: BIOS to poweroff in {boot.seconds:.0f} s")
    with mounted_disk(disk, tmp_path / "after"):
        env = parse_grubenv((tmp_path / "after/boot/grub/grubenv").read_text())
    assert env.get("next_entry", "") == ""  # GRUB cleared the boot-once: the next boot is the default
