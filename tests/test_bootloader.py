"""Bootloader facts read from a target's own files: where grubenv really is, and the
arguments the normal entry has that ours inherits."""

import os

from tests.infra import make_tool_target
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


def test_where_grub_reads_its_configuration_from_the_esp_its_environment_is_there_too(tmp_path):
    """Debian's signed GRUB has its prefix on the ESP (EFI/debian): when the grub.cfg there is
    the real one, not a stub that loads /boot/grub's, its grubenv beside it is the one GRUB
    loads and clears at boot; grub-reboot would write /boot/grub/grubenv, which GRUB never
    reads. The boot modes set (and remove clears) the ESP's. (GRUB's tools are the fake ones
    of make_tool_target: the real ones do this on a real UEFI disk in test_full_chain.)"""
    fake_target = make_tool_target(tmp_path / "target")
    (fake_target / "boot/efi/EFI/debian").mkdir(parents=True)
    cfg = fake_target / "boot/efi/EFI/debian/grub.cfg"
    cfg.write_text("search --fs-uuid --set=root 1234\nset prefix=($root)'/grub'\nconfigfile $prefix/grub.cfg\n")
    host = Host(fake_target)
    stub = bootloader.detect(host)
    assert (stub.config, stub.grubenv, stub.env_on_esp) == ("/boot/grub/grub.cfg", "/boot/grub/grubenv", False)
    cfg.write_text("### BEGIN /etc/grub.d/00_header ###\nload_env\n")
    esp = bootloader.detect(host)
    assert (esp.config, esp.grubenv) == ("/boot/efi/EFI/debian/grub.cfg", "/boot/efi/EFI/debian/grubenv")
    bootloader.set_boot_once(host, esp, "6.1.0-9-amd64")
    assert bootloader.grubenv(host, esp)["next_entry"] == "tmpfs-root-6.1.0-9-amd64"
    assert "next_entry" not in bootloader.grubenv(host, stub)
    bootloader.set_default(host, esp, "6.1.0-9-amd64")
    bootloader.clear_boot_modes(host, esp, "gnulinux-simple-x")
    env = bootloader.grubenv(host, esp)
    assert "next_entry" not in env and env["saved_entry"] == "gnulinux-simple-x"


def test_an_esp_vendor_directory_linked_out_of_the_target_stays_in_the_target(tmp_path):
    """A hostile disk: the ESP's vendor directory is a link to an absolute path outside the
    target. It resolves inside the target, as every path does: the boot mode is written
    there and nothing outside the target is read or written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "grub.cfg").write_text("### outside: must not be read\n")
    fake_target = make_tool_target(tmp_path / "target")
    (fake_target / "boot/efi/EFI").mkdir(parents=True)
    os.symlink(outside, fake_target / "boot/efi/EFI/evil")
    inside = fake_target / str(outside).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "grub.cfg").write_text("### BEGIN /etc/grub.d/00_header ###\nload_env\n")
    host = Host(fake_target)
    bl = bootloader.detect(host)
    assert bl.grubenv == "/boot/efi/EFI/evil/grubenv"
    bootloader.set_boot_once(host, bl, "6.1.0-9-amd64")
    assert "next_entry=tmpfs-root-6.1.0-9-amd64" in (inside / "grubenv").read_text()
    assert sorted(p.name for p in outside.iterdir()) == ["grub.cfg"]
