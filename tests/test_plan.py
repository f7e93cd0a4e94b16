"""The plan: source forms, the derived kernel command line, kernels, TOML round trip."""

import json
import os

import pytest

from tests.infra import FAKE_KVER, cli_inproc, make_fake_target, run_cli
from tui.devices import BlockDevice
from tui.host import Host
from tui.plan import Plan, default_kernels, kernel_cmdline, parse_source


@pytest.mark.parametrize(
    "text,kind,value",
    [
        ("/dev/vda1", "path", "/dev/vda1"),
        ("LABEL=IMGVOL", "LABEL", "LABEL=IMGVOL"),
        ("UUID=0a1b", "UUID", "UUID=0a1b"),
        ("PARTUUID=6f1c", "PARTUUID", "PARTUUID=6f1c"),
        ("PARTLABEL=images", "PARTLABEL", "PARTLABEL=images"),
        ("nfs:10.0.0.11:/srv/images", "nfs", "NFS=nfs:10.0.0.11:/srv/images"),
        ("NFS=nfs4:server.lan:/export,vers=4.2", "nfs", "NFS=nfs4:server.lan:/export,vers=4.2"),
        ("tmpfs:LABEL=X", "LABEL", "LABEL=X"),
    ],
)
def test_source_forms(text, kind, value):
    source = parse_source(text)
    assert (source.kind, source.value) == (kind, value)


def test_nfs_parts():
    s = parse_source("nfs:10.0.0.11:/nfsexport,tcp,hard,vers=3")
    assert (s.nfs_scheme, s.nfs_server, s.nfs_path, s.nfs_options) == (
        "nfs",
        "10.0.0.11",
        "/nfsexport",
        "tcp,hard,vers=3",
    )


def test_cmdline_is_compatible_with_the_original_module():
    plan = Plan(source="LABEL=IMGVOL", image="images/rootfs.tar.zst", size="2G", boot="menu")
    assert kernel_cmdline(plan) == [
        "root=tmpfs:LABEL=IMGVOL",
        "rd.tmpfs.imgfile=images/rootfs.tar.zst",
        "rd.tmpfs.size=2G",
    ]


def test_cmdline_lvm_from_the_device_and_from_a_mapper_path():
    lv = BlockDevice(
        name="dm-0", path="/dev/mapper/vg0-images", type="lvm", size=1, lvm="vg0/images", uuid="9e8d", fstype="xfs"
    )
    plan = Plan(source="UUID=9e8d", image="r.tar", boot="menu")
    assert "rd.lvm.lv=vg0/images" in kernel_cmdline(plan, [lv])
    plan = Plan(source="/dev/mapper/my--vg-root", image="r.tar", boot="menu")
    assert "rd.lvm.lv=my-vg/root" in kernel_cmdline(plan, [])


def test_cmdline_nfs_brings_the_network_up():
    plan = Plan(source="nfs:10.0.0.11:/srv", image="r.tar", boot="menu")
    assert kernel_cmdline(plan)[-2:] == ["ip=dhcp", "rd.neednet=1"]
    plan.network = "10.0.0.31:::255.255.255.0:node1:eth1:none"
    assert "ip=10.0.0.31:::255.255.255.0:node1:eth1:none" in kernel_cmdline(plan)


def test_boot_once_falls_back_on_failure():
    args = kernel_cmdline(Plan(source="/dev/vda1", image="r.tar", boot="once"))
    assert {"rd.shell=0", "rd.emergency=reboot"} <= set(args)
    assert any(a.startswith("panic=") for a in args)
    assert "rd.shell=0" not in kernel_cmdline(Plan(source="/dev/vda1", image="r.tar", boot="menu"))


def test_default_kernel_is_the_running_one_when_installed_else_the_newest(tmp_path):
    running = os.uname().release
    target = make_fake_target(tmp_path / "a", kvers=("5.10.0-1-amd64", running, "99.0.0-1-amd64"))
    assert default_kernels(Host(target)) == [running]
    target = make_fake_target(tmp_path / "b", kvers=("6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-1-amd64"))
    assert default_kernels(Host(target)) == ["6.1.0-10-amd64"]


def test_plan_round_trip_through_toml():
    plan = Plan(
        source="LABEL=IMGVOL",
        image='images/"odd"\\name.tar',
        size="2G",
        kernels=["a", "b"],
        title="Title with 'quotes'",
        boot="default",
        append="quiet",
        sha256="ab" * 32,
        tmpfs_opts="mpol=interleave",
        hostonly=False,
    )
    assert Plan.from_toml(plan.to_toml()) == plan


def test_saved_plan_loads_to_the_same_command_line(fake_target, tmp_path):
    saved = tmp_path / "plan.toml"
    first = run_cli(
        "plan",
        f"--root={fake_target}",
        "--source=LABEL=IMGVOL",
        "--image=images/rootfs.tar.zst",
        "--size=2G",
        "--append=console=ttyS0",
        f"--save={saved}",
        "--json",
    )
    assert first.returncode == 0, first.stderr
    again = run_cli("plan", f"--root={fake_target}", f"--plan={saved}", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cmdline"] == json.loads(first.stdout)["cmdline"]
    assert "console=ttyS0" in json.loads(again.stdout)["cmdline"]


def test_plan_json_lists_files_and_commands_from_the_apply_steps(fake_target):
    result = run_cli(
        "plan", f"--root={fake_target}", "--source=LABEL=IMGVOL", "--image=images/rootfs.tar.zst", "--size=2G", "--json"
    )
    data = json.loads(result.stdout)
    assert "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/rootfs.tar.zst rd.tmpfs.size=2G" in data["cmdline"]
    paths = [f["path"] for f in data["files"]]
    assert f"/boot/initrd-tmpfs-root-{FAKE_KVER}.img" in paths
    assert f"/boot/initrd.img-{FAKE_KVER}" not in paths  # never the distro's own initramfs
    assert "/usr/lib/dracut/modules.d/90tmpfs-root/tmpfs-root.sh" in paths
    assert "/etc/grub.d/42_tmpfs-root" in paths
    dracut = [c for c in data["commands"] if c[0] == "dracut"]
    assert dracut and "--kver" in dracut[0] and FAKE_KVER in dracut[0] and "tmpfs-root" in dracut[0]
    assert any(c[0] == "grub-reboot" for c in data["commands"])


@pytest.mark.parametrize(
    "fs,abstraction,refused",
    [
        ("ext2", "", False),
        ("ext2", "lvm", True),
        ("ext2", "diskfilter mdraid1x", True),
        ("btrfs", "", True),
        ("zfs", "", True),
        ("xfs", "", False),
        ("fat", "", False),
        ("ext2", "cryptodisk luks2", True),
    ],
)
def test_boot_once_is_refused_where_grub_cannot_write_grubenv(fs, abstraction, refused):
    from tui.bootloader import once_refusal

    reason = once_refusal(fs + "\n", abstraction + "\n")
    assert (reason is not None) == refused
    if refused:
        assert "cannot clear the one-time entry" in reason


def test_grubenv_parsing():
    from tui.bootloader import parse_grubenv

    block = "# GRUB Environment Block\nnext_entry=tmpfs-root-6.1\nsaved_entry=0\n" + "#" * 900
    assert parse_grubenv(block) == {"next_entry": "tmpfs-root-6.1", "saved_entry": "0"}


def test_the_entry_carries_the_admins_kernel_arguments(fake_target):
    """GRUB_CMDLINE_LINUX and _DEFAULT (a serial console, net.ifnames=0) come first, minus
    what names the normal root; the plan shows them and counts them in the length check."""
    (fake_target / "etc/default").mkdir(parents=True)
    (fake_target / "etc/default/grub").write_text(
        'GRUB_CMDLINE_LINUX="console=ttyS0,115200 root=/dev/sda2 ro net.ifnames=0 rootflags=noatime"\n'
        "GRUB_CMDLINE_LINUX_DEFAULT='quiet'\n"
    )
    result = cli_inproc("plan", f"--root={fake_target}", "--source=LABEL=IMGVOL", "--image=r.tar", "--json")
    data = json.loads(result.stdout)
    assert data["inherited"] == ["console=ttyS0,115200", "net.ifnames=0", "quiet"]
    assert data["cmdline"].startswith("console=ttyS0,115200 net.ifnames=0 quiet root=tmpfs:LABEL=IMGVOL ")
    text = cli_inproc("plan", f"--root={fake_target}", "--source=LABEL=IMGVOL", "--image=r.tar").stdout
    assert "the first 3 from GRUB_CMDLINE_LINUX" in text
    (fake_target / "etc/default/grub").write_text(f'GRUB_CMDLINE_LINUX="{"console=ttyS0 " * 200}"\n')
    long = cli_inproc("plan", f"--root={fake_target}", "--source=LABEL=IMGVOL", "--image=r.tar")
    assert long.returncode == 2 and "arguments from /etc/default/grub" in long.stderr


def test_a_uuid_is_written_as_the_device_has_it():
    """udev names /dev/disk/by-uuid with the case blkid reports: upper case for FAT."""
    from tui.devices import BlockDevice
    from tui.plan import Plan, kernel_cmdline

    fat = BlockDevice("sdb1", "/dev/sdb1", "part", 1, fstype="vfat", uuid="75A6-DBC3", partuuid="ab12-01")
    assert kernel_cmdline(Plan(source="UUID=75a6-dbc3", image="r.tar"), [fat])[0] == "root=tmpfs:UUID=75A6-DBC3"
    assert kernel_cmdline(Plan(source="PARTUUID=AB12-01", image="r"), [fat])[0] == "root=tmpfs:PARTUUID=ab12-01"
    assert kernel_cmdline(Plan(source="UUID=75a6-dbc3", image="r.tar"), [])[0] == "root=tmpfs:UUID=75a6-dbc3"
