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


def pack_with_check_unit(mnt, unit: str, excludes: list[str]) -> None:
    """The check unit in the system mounted on *mnt*, and an image of that system made by
    image create on its own root, at images/rootfs.tar.zst."""
    (mnt / "etc/systemd/system/tmpfs-root-check.service").write_text(unit)
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
        *[a for p in excludes for a in ("--exclude", p)],
        timeout=600,
    )
    assert packed.returncode == 0, packed.stderr


def prepare_and_apply(copy, unit: str, excludes: list[str]) -> dict:
    """The check unit and the image in the copy (pack_with_check_unit), and apply --boot
    once of that image by the root's UUID; returns the tree as it was before apply."""
    from tests.infra import tree_digest

    mnt = copy.mnt
    pack_with_check_unit(mnt, unit, excludes)
    before = tree_digest(mnt)
    applied = run_cli(
        "apply",
        "--root",
        mnt,
        "--source",
        f"UUID={copy.uuid}",
        "--image",
        "images/rootfs.tar.zst",
        "--no-hostonly",
        "--boot",
        "once",
        "--yes",
        timeout=900,
    )
    assert applied.returncode == 0, applied.stderr
    return before


def test_grub_boots_our_entry_once_into_the_targets_systemd_on_tmpfs(tmp_path):
    with system_disk_copy(tmp_path, bootable=True) as copy:
        disk, mnt = copy.image, copy.mnt
        # no --append: the serial console comes from the target's GRUB_CMDLINE_LINUX
        prepare_and_apply(copy, CHECK_UNIT, SLIM)
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
    # The kernel and the initramfs spoke on the serial console: console=ttyS0 reached our entry
    # from the target's GRUB_CMDLINE_LINUX (tests/infra.GRUB_DEFAULTS), not from the plan.
    assert "tmpfs-root: root filesystem ready in RAM" in boot.log
    # image create recorded the image's size, so the boot chose the tmpfs size from it.
    chosen = boot.lines("tmpfs-root: tmpfs of")
    assert chosen and "uncompressed" in chosen[0] and "image size unknown" not in chosen[0], chosen
    assert boot.returncode == 0  # powered off by the unit, not killed at the timeout
    print(f"full chain: BIOS to poweroff in {boot.seconds:.0f} s")
    with mounted_disk(disk, tmp_path / "after"):
        env = parse_grubenv((tmp_path / "after/boot/grub/grubenv").read_text())
    assert env.get("next_entry", "") == ""  # GRUB cleared the boot-once: the next boot is the default


#: On the UEFI disk the unit reports on every boot: the tmpfs one and the normal one after it.
CHECK_EVERY_BOOT = CHECK_UNIT.replace("ConditionKernelCommandLine=rd.tmpfs.imgfile\n", "")


@pytest.mark.parametrize("layout", ["boot", "esp"])
def test_uefi_with_a_separate_boot_boots_once_then_falls_back_and_remove_restores(tmp_path, layout):
    """Debian 13 (dracut-ng, systemd 257) on a GPT disk with an ESP, a separate /boot and the
    root, booted by OVMF, in both places GRUB's directory is on real hosts: /boot/grub
    (Debian's stub on the ESP loads it) or the ESP itself (grub.cfg and grubenv there, as a
    signed GRUB with its prefix in EFI/<vendor> has them). Boot 1 takes our entry (next_entry
    in the grubenv GRUB reads) into systemd on a tmpfs root, and GRUB clears next_entry; on
    /boot's layout boot 2 is the normal entry again (on the ESP's, the cleared variable says
    the same: GRUB's logic is the one just proven). Then remove leaves every file as it was
    before apply, the ESP's too."""
    from tests.infra import ESP_GRUB, grub_on_the_esp, mounted_uefi_disk, ovmf_vars, tree_digest
    from tui.bootloader import parse_grubenv as env_of

    esp = layout == "esp"
    grubdir = ESP_GRUB if esp else "boot/grub"
    with system_disk_copy(tmp_path, uefi=True, esp=esp) as copy:
        disk, mnt = copy.image, copy.mnt
        if esp:
            grub_on_the_esp(mnt)
        # the kernel's modules stay in the image: the booted system mounts /boot/efi (vfat)
        before = prepare_and_apply(copy, CHECK_EVERY_BOOT, [p for p in SLIM if p != "/usr/lib/modules/*"])
        assert env_of((mnt / grubdir / "grubenv").read_text())["next_entry"].startswith("tmpfs-root-")
        assert not esp or not (mnt / "boot/grub/grubenv").exists()  # not where GRUB would never look
        cfg = (mnt / grubdir / "grub.cfg").read_text()
        assert re.search(r"linux\s+/vmlinuz-\S+ console=ttyS0 root=tmpfs:", cfg), cfg  # paths in /boot's fs
    firmware = ovmf_vars(tmp_path)
    first = qemu_boot(
        None, None, "", [disk], tmp_path / "boot1.log", timeout=900, memory="1536M", snapshot=False, uefi=firmware
    )
    checks = first.lines("TMPFS-ROOT-CHECK")
    assert checks and re.search(r"root=tmpfs\s+tmpfs ", checks[-1]), first.log[-3000:]
    assert "tmpfs-root: root filesystem ready in RAM" in first.log and first.returncode == 0
    if not esp:
        second = qemu_boot(
            None, None, "", [disk], tmp_path / "boot2.log", timeout=900, memory="1536M", snapshot=True, uefi=firmware
        )
        checks = second.lines("TMPFS-ROOT-CHECK")
        assert checks and re.search(r"root=ext4\s+/dev/", checks[-1]), second.log[-3000:]
        assert "rd.tmpfs.imgfile" not in second.log  # the normal entry: the boot-once was used up
        print(f"UEFI: boot once {first.seconds:.0f} s, normal boot {second.seconds:.0f} s")
    with mounted_uefi_disk(disk, tmp_path / "after", esp=esp):
        after = tmp_path / "after"
        assert env_of((after / grubdir / "grubenv").read_text()).get("next_entry", "") == ""
        removed = run_cli("remove", "--root", after, "--yes", timeout=600)
        assert removed.returncode == 0, removed.stderr
        now = tree_digest(after)
        changed = {k: (before.get(k), now.get(k)) for k in before.keys() | now.keys() if before.get(k) != now.get(k)}
    # GRUB itself rewrote grubenv at boot (next_entry cleared); nothing else differs
    assert list(changed) == [f"{grubdir}/grubenv"], changed


#: The admin's side on the LVM system, run at its first boot: GRUB installed as an installer
#: does it (grub-install and update-grub probe the LV: only a kernel with device-mapper can),
#: then tmpfs-root from this checkout with the system's own Python: a boot-once first (GRUB
#: cannot write grubenv on an LV: refused), then as the default entry.
LVM_SETUP = """#!/bin/sh
say() {{ echo "TMPFS-ROOT-SETUP $*"; }}
grub-install --target=i386-pc /dev/vda && update-grub
say "grub rc=$?"
export PYTHONPATH=/opt/tmpfs-root
apply() {{ python3 -m tui apply --source UUID={uuid} --image images/rootfs.tar.zst --yes "$@"; }}
apply --boot once
say "once rc=$?"
apply --boot default
say "default rc=$?"
sync
systemctl --no-block poweroff
"""
LVM_SETUP_UNIT = """[Unit]
Description=tmpfs-root test: the admin's setup of the LVM system
ConditionKernelCommandLine=!rd.tmpfs.imgfile
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh /root/tmpfs-root-setup.sh
# the console is the serial port (a getty's hangup there would cut a plain redirection)
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


def menuentries(cfg: str) -> list[str]:
    """The menuentry blocks of a grub.cfg, each as its text (submenus' entries included)."""
    return re.findall(r"^\s*menuentry .*?^\s*\}", cfg, flags=re.M | re.S)


def test_lvm_root_converted_on_the_system_itself_boots_from_its_lv(tmp_path):
    """Debian 12 with / and /boot on an LV (trvg/root), the image on that same LV. tmpfs-root
    runs on the system itself (as an admin would: its kernel has device-mapper, this
    machine's has not), host-only dracut build included. Our entry reads the kernel through
    GRUB's lvm module exactly as the distro's own entry does (prepare_grub_to_access_device),
    its command line activates the LV (rd.lvm.lv), a boot-once is refused with the reason,
    and GRUB's default boot reaches the system's systemd on a tmpfs root."""
    import shutil
    import uuid as uuids

    from tests.infra import (
        LVM_LV,
        LVM_ROOT,
        LVM_VG,
        REPO,
        debian_target,
        lvm_system_disk,
        mounted_lv,
        qemu_boot,
        sh,
        target_kernel,
    )

    image, offset, size = lvm_system_disk()
    disk = tmp_path / "disk.img"
    sh("cp", "--sparse=always", image, disk)
    uuid = str(uuids.uuid4())  # this copy's own: never the same as another disk's
    mnt = tmp_path / "mnt"
    with mounted_lv(disk, offset, size, mnt, new_uuid=uuid):
        pack_with_check_unit(mnt, CHECK_UNIT, SLIM)
        shutil.copytree(REPO / "tui", mnt / "opt/tmpfs-root/tui", ignore=shutil.ignore_patterns("__pycache__"))
        (mnt / "root/tmpfs-root-setup.sh").write_text(LVM_SETUP.format(uuid=uuid))
        (mnt / "etc/systemd/system/tmpfs-root-setup.service").write_text(LVM_SETUP_UNIT)
        (mnt / "etc/systemd/system/multi-user.target.wants/tmpfs-root-setup.service").symlink_to(
            "/etc/systemd/system/tmpfs-root-setup.service"
        )
    target = debian_target()
    kver = target_kernel(target)
    # first boot by QEMU's -kernel (no bootloader yet), with the distribution's own initramfs
    setup = qemu_boot(
        target / f"boot/vmlinuz-{kver}",
        target / f"boot/initrd.img-{kver}",
        f"root={LVM_ROOT} rd.lvm.lv={LVM_VG}/{LVM_LV} rw",
        [disk],
        tmp_path / "setup.log",
        timeout=1500,
        memory="1536M",
        snapshot=False,
        cpus=2,
    )
    said = re.findall(r"TMPFS-ROOT-SETUP (.*)", setup.log)  # the journal's prefix before it on the console
    assert said == ["grub rc=0", "once rc=2", "default rc=0"], setup.log[-5000:]
    # the boot-once is refused in one line naming the field, why, and what is accepted
    assert re.search(
        r"tmpfs-root: error: --boot 'once': /boot/grub \(where grubenv is\) is on lvm, where GRUB cannot clear "
        r"the one-time entry at boot; accepted here: menu, or default",
        setup.log,
    ), setup.log[-5000:]
    # the engine's own host-only build, the LV named by its stable name
    assert re.search(r"dracut .*--add 'tmpfs-root lvm' --hostonly .*--add-device /dev/disk/by-uuid/" + uuid, setup.log)
    assert setup.returncode == 0
    with mounted_lv(disk, offset, size, tmp_path / "after"):
        cfg = (tmp_path / "after/boot/grub/grub.cfg").read_text()
        env = parse_grubenv((tmp_path / "after/boot/grub/grubenv").read_text())
    entries = menuentries(cfg)
    ours = [e for e in entries if "--id 'tmpfs-root-" in e]
    distro = [e for e in entries if "tmpfs-root" not in e]
    assert ours and distro, cfg

    def access(entry: str) -> list[str]:  # what prepare_grub_to_access_device wrote
        return [line.strip() for line in entry.splitlines() if re.match(r"\s*(insmod|search|set root)", line)]

    assert "insmod lvm" in access(ours[0]), ours[0]
    assert [a for a in access(ours[0]) if a != "insmod gzio"] == [a for a in access(distro[0]) if a != "insmod gzio"]
    assert f"rd.lvm.lv={LVM_VG}/{LVM_LV}" in ours[0] and f"root=tmpfs:UUID={uuid}" in ours[0], ours[0]
    assert env.get("saved_entry", "").startswith("tmpfs-root-") and not env.get("next_entry"), env
    boot = qemu_boot(None, None, "", [disk], tmp_path / "boot.log", timeout=900, memory="1536M")
    checks = boot.lines("TMPFS-ROOT-CHECK")
    assert checks and re.search(r"root=tmpfs\s+tmpfs ", checks[-1]), boot.log[-3000:]
    assert "host=tmpfs-root-lvm" in checks[-1]
    assert f"rd.lvm.lv={LVM_VG}/{LVM_LV}" in boot.log  # the kernel's command line: our entry's
    assert "tmpfs-root: root filesystem ready in RAM" in boot.log and boot.returncode == 0
    print(f"LVM root: setup boot {setup.seconds:.0f} s, tmpfs boot {boot.seconds:.0f} s")
