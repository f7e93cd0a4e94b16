"""Bootloader facts read from a target's own files: where grubenv really is, and the
arguments the normal entry has that ours inherits."""

import os

from tui import bootloader
from tui.host import Host


def test_grubenv_is_probed_where_it_really_is(fake_target):
    """RHEL's EFI layouts link /boot/grub2/grubenv to the ESP: GRUB must be able to write
    there at boot, so that is the directory --boot once is checked against."""
    (fake_target / "boot/efi/EFI/fedora").mkdir(parents=True)
    (fake_target / "boot/efi/EFI/fedora/grubenv").write_text("# GRUB Environment Block\n")
    os.symlink("../efi/EFI/fedora/grubenv", fake_target / "boot/grub/grubenv")
    host = Host(fake_target)
    assert bootloader.envdir(host, bootloader.detect(host)) == "/boot/efi/EFI/fedora"
    (fake_target / "boot/grub/grubenv").unlink()
    assert bootloader.envdir(host, bootloader.detect(host)) == "/boot/grub"


def test_the_normal_entrys_arguments_minus_its_root(fake_target):
    (fake_target / "etc/default/grub.d").mkdir(parents=True)
    (fake_target / "etc/default/grub").write_text(
        'GRUB_CMDLINE_LINUX="root=/dev/sda2 rootfstype=ext4 console=tty0 ro"\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
    )
    (fake_target / "etc/default/grub.d/50-serial.cfg").write_text('GRUB_CMDLINE_LINUX="console=ttyS0 rw"\n')
    assert bootloader.inherited_args(Host(fake_target)) == ["console=ttyS0", "quiet"]  # drop-ins win
