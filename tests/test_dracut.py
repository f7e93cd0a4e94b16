"""Building the initramfs through the engine: the dracut command line it runs, and that
a failed build never touches the previous image (the real builds are in test_boot_qemu)."""

import shutil

import pytest

from tests.infra import FAKE_KVER
from tui import dracut
from tui.devices import BlockDevice
from tui.host import CommandError, Host
from tui.plan import Plan

LV = BlockDevice("dm-0", "/dev/mapper/vg0-images", "lvm", 1, fstype="ext4", uuid="u-1", lvm="vg0/images")


def test_hostonly_build_adds_the_source_device_and_keeps_the_host_root_out():
    argv = dracut.dracut_argv(Plan(source="UUID=u-1", image="r.tar"), "6.1", "/boot/x.img", [LV])
    assert argv[:4] == ["dracut", "--force", "--kver", "6.1"]
    assert "--hostonly" in argv and "--no-hostonly-cmdline" in argv
    assert argv[argv.index("--add-device") + 1] == "/dev/mapper/vg0-images"
    assert argv[argv.index("--add") + 1] == "tmpfs-root lvm"
    assert argv[-1] == "/boot/x.img"


def test_the_source_device_is_named_as_it_stays_across_boots_and_machines():
    """The kernel hook repeats the options on the target later: a loop or sdX name from the
    machine that ran apply would name another disk there, its by-uuid link does not."""
    part = BlockDevice(
        "loop0p2",
        "/dev/loop0p2",
        "part",
        1,
        fstype="ext4",
        uuid="u-2",
        links=["/dev/disk/by-id/x", "/dev/disk/by-partuuid/p-2", "/dev/disk/by-uuid/u-2"],
    )
    argv = dracut.dracut_argv(Plan(source="UUID=u-2", image="r.tar"), "6.1", "/o", [part])
    assert argv[argv.index("--add-device") + 1] == "/dev/disk/by-uuid/u-2"
    bare = BlockDevice("loop0p2", "/dev/loop0p2", "part", 1, fstype="ext4", uuid="u-2", links=["/dev/disk/by-id/y"])
    assert dracut.dracut_options(Plan(source="UUID=u-2", image="r"), [bare])[-1] == "/dev/disk/by-id/y"


def test_generic_build_and_nfs_modules():
    argv = dracut.dracut_argv(Plan(source="nfs:10.0.0.1:/srv", image="r.tar", hostonly=False), "6.1", "/o")
    assert "--no-hostonly" in argv and "--add-device" not in argv
    assert argv[argv.index("--add") + 1] == "tmpfs-root nfs"


def test_module_installs_every_shell_file(fake_target):
    host = Host(fake_target)
    assert dracut.install_module(host) is True  # it changed the target
    written = [a.path for a in host.written_files()]
    names = {p.rsplit("/", 1)[1] for p in written}
    assert dracut.install_module(host) is False  # the second time, nothing to change
    assert {
        "module-setup.sh",
        "parse-tmpfs-root.sh",
        "tmpfs-root.sh",
        "tmpfs-root-lib.sh",
        "tmpfs-root-generator.sh",
    } <= names
    installed = fake_target / "usr/lib/dracut/modules.d/90tmpfs-root/tmpfs-root.sh"
    assert installed.read_bytes() == (dracut.MODULE_SOURCE / "tmpfs-root.sh").read_bytes()
    assert installed.stat().st_mode & 0o111


@pytest.fixture
def chroot_target(fake_target):
    """The fake target with a static busybox as /bin/sh, so its fake dracut runs under chroot."""
    (fake_target / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/busybox", fake_target / "bin/busybox")
    (fake_target / "bin/sh").symlink_to("busybox")
    return fake_target


def _fake_dracut(target, script):
    exe = target / "usr/bin/dracut"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def test_build_streams_output_and_renames_on_success(chroot_target):
    _fake_dracut(chroot_target, 'echo "building $3"; for a; do out=$a; done; echo image > "$out"\n')
    host = Host(chroot_target)
    lines = []
    output = f"/boot/initrd-tmpfs-root-{FAKE_KVER}.img"
    dracut.build_initramfs(host, Plan(source="/dev/vda1", image="r.tar"), FAKE_KVER, output, on_line=lines.append)
    assert lines == [f"building {FAKE_KVER}"]
    assert (chroot_target / output.lstrip("/")).read_text() == "image\n"
    assert not (chroot_target / (output.lstrip("/") + ".new")).exists()


def test_failed_build_leaves_the_previous_image_untouched(chroot_target):
    output = f"boot/initrd-tmpfs-root-{FAKE_KVER}.img"
    (chroot_target / output).write_text("previous image")
    _fake_dracut(chroot_target, 'for a; do out=$a; done; echo partial > "$out"; echo "dracut: no space" >&2; exit 1\n')
    host = Host(chroot_target)
    with pytest.raises(CommandError, match="dracut exited with status 1: dracut: no space"):
        dracut.build_initramfs(host, Plan(source="/dev/vda1", image="r.tar"), FAKE_KVER, "/" + output)
    assert (chroot_target / output).read_text() == "previous image"
    assert not (chroot_target / (output + ".new")).exists()
    assert (chroot_target / f"boot/initrd.img-{FAKE_KVER}").read_text() == "the distro's initramfs"


def test_lvm_module_for_a_mapper_path_not_yet_present():
    """Same rule as the command line's rd.lvm.lv: both come from plan.source_lvm."""
    assert dracut.extra_modules(Plan(source="/dev/mapper/vg0-images", image="r.tar"), []) == ["lvm"]
    assert dracut.extra_modules(Plan(source="LABEL=X", image="r.tar"), []) == []
