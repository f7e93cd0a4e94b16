"""Building the initramfs through the engine: the dracut command line it runs, and that
a failed build never touches the previous image (the real builds are in test_boot_qemu)."""

import shutil
import subprocess

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
    # no by-uuid link here (no udevd made it): udev makes it on the target, so the hook names it
    assert dracut.dracut_options(Plan(source="UUID=u-2", image="r"), [bare])[-1] == "/dev/disk/by-uuid/u-2"
    # while the build now takes the name this machine has (dracut follows it to the drivers)
    assert dracut.dracut_options(Plan(source="UUID=u-2", image="r"), [bare], now=True)[-1] == "/dev/loop0p2"
    no_uuid = BlockDevice(
        "sdz1",
        "/dev/sdz1",
        "part",
        1,
        fstype="xfs",
        partuuid="5e2a3c1d-0b9f-4a11-8c2e-7f00d1e2c3b4",
        links=["/dev/disk/by-path/z"],
    )
    assert (
        dracut.dracut_options(Plan(source="PARTUUID=5e2a3c1d-0b9f-4a11-8c2e-7f00d1e2c3b4", image="r"), [no_uuid])[-1]
        == "/dev/disk/by-partuuid/5e2a3c1d-0b9f-4a11-8c2e-7f00d1e2c3b4"
    )
    odd = BlockDevice("sdz2", "/dev/sdz2", "part", 1, fstype="vfat", uuid="a b", links=["/dev/disk/by-path/w"])
    assert dracut.dracut_options(Plan(source="/dev/sdz2", image="r"), [odd])[-1] == "/dev/disk/by-path/w"


def test_generic_build_and_nfs_modules():
    argv = dracut.dracut_argv(Plan(source="nfs:10.0.0.1:/srv", image="r.tar", hostonly=False), "6.1", "/o")
    assert "--no-hostonly" in argv and "--add-device" not in argv
    assert argv[argv.index("--add") + 1] == "tmpfs-root nfs"


# module-setup.sh's depends() in bash with dracut's functions it calls stubbed: which
# network modules a build takes, and the warning when dracut cannot install one. The real
# builds and boots of both dracut generations are in test_boot_qemu (a generic build of
# Debian 12 and 13 boots NFS and HTTP sources; Debian 13 without systemd warns).
DEPENDS = """
check_module() {
    case " $INSTALLABLE " in
        *" $1 "*) echo "checked $1" ;;
        *)
            echo "dracut[E]: Module 'systemd-networkd' depends on module 'systemd', which can't be installed" >&2
            echo "dracut[E]: Module '$1' depends on module 'network', which can't be installed" >&2
            return 1
            ;;
    esac
}
dwarn() { echo "WARN $*" >&2; }
. "$MODULE/module-setup.sh"
depends
"""


def module_depends(tmp_path, hostonly: str, installable: str, plan_source: str | None = None):
    if plan_source is not None:
        (tmp_path / "etc/tmpfs-root").mkdir(parents=True)
        (tmp_path / "etc/tmpfs-root/plan.toml").write_text(Plan(source=plan_source, image="r.tar").to_toml())
    env = {"MODULE": str(dracut.MODULE_SOURCE), "hostonly": hostonly, "INSTALLABLE": installable}
    env["dracutsysrootdir"] = str(tmp_path)
    r = subprocess.run(["bash", "-c", DEPENDS], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split(), r.stderr.strip().splitlines()


def test_a_generic_build_takes_the_network_modules_dracut_can_install(tmp_path):
    assert module_depends(tmp_path, "", "nfs url-lib") == (["base", "nfs", "url-lib"], [])
    modules, warnings = module_depends(tmp_path, "", "nfs")
    assert modules == ["base", "nfs"]  # never a hard dependency that would drop tmpfs-root
    assert warnings == [
        "WARN tmpfs-root: this initramfs cannot boot HTTP(S) sources: dracut's 'url-lib' module cannot be "
        "installed here (Module 'systemd-networkd' depends on module 'systemd', which can't be installed)"
    ]


@pytest.mark.parametrize(
    "plan_source,wanted",
    [
        (None, []),
        ("LABEL=IMGVOL", []),
        ("UUID=nfs:x", []),
        ("NFS=nfs4:10.0.0.1:/srv", ["nfs", "url-lib"]),
        ("tmpfs:nfs:10.0.0.1:/srv,vers=3", ["nfs", "url-lib"]),
        ("https://images.example/", ["nfs", "url-lib"]),
    ],
)
def test_a_host_only_build_takes_them_when_the_installed_plan_is_on_the_network(tmp_path, plan_source, wanted):
    assert module_depends(tmp_path, "yes", "nfs url-lib", plan_source) == (["base", *wanted], [])


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
        "tmpfs-root-img-lib.sh",
        "tmpfs-root-url-lib.sh",
        "tmpfs-root-shards-lib.sh",
        "tmpfs-root-fill.sh",
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
    (fake_target / "bin/sh").unlink(missing_ok=True)  # the fake target's stand-in, never run
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
