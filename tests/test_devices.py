"""Device discovery on real loop devices (with and without udevd), and on devices
this machine cannot make, described for umockdev."""

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.infra import (
    GPT_ESP,
    REPO,
    Part,
    forget_udev_db,
    loop_device,
    make_disk_image,
    make_fake_target,
    make_tool_target,
    run_cli,
    sh,
    udevd,
    udevd_reachable,
    udevd_stopped,
)
from tui.devices import BlockDevice, parse_mountinfo, recommended_identifier

UUID = "11111111-2222-3333-4444-555555555555"
PARTUUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def gpt_loop(tmp_path):
    """A GPT disk image on a loop device: ext4 (LABEL, fixed UUID, PARTLABEL) and vfat."""
    image = tmp_path / "disk.img"
    make_disk_image(
        image,
        [
            Part(24, "ext4", label="IMGVOL", uuid=UUID, partlabel="tmpfsimg", partuuid=PARTUUID),
            Part(12, "vfat", label="EFIVOL", partlabel="esp", type=GPT_ESP),
        ],
        tmp_path,
    )
    with loop_device(image) as dev:
        yield dev


def _by_path(stdout: str) -> dict:
    return {d["path"]: d for d in json.loads(stdout)}


@pytest.mark.udev
def test_loop_partition_with_udevd(gpt_loop):
    with udevd():
        result = run_cli("devices", "--json")
    assert result.returncode == 0, result.stderr
    part = _by_path(result.stdout)[f"{gpt_loop}p1"]
    assert (part["label"], part["uuid"], part["partuuid"], part["partlabel"]) == ("IMGVOL", UUID, PARTUUID, "tmpfsimg")
    assert part["fstype"] == "ext4" and part["type"] == "part" and part["parent"] == Path(gpt_loop).name
    assert f"/dev/disk/by-uuid/{UUID}" in part["links"]  # these come from udev's database
    assert part["recommended"] == f"UUID={UUID}"
    assert _by_path(result.stdout)[f"{gpt_loop}p2"]["fstype"] == "vfat"


@pytest.mark.udev
def test_loop_partition_without_udevd_falls_back_to_blkid(gpt_loop):
    with udevd_stopped():
        forget_udev_db(gpt_loop)
        assert not udevd_reachable()
        result = run_cli("devices", "--json")
    part = _by_path(result.stdout)[f"{gpt_loop}p1"]
    assert part["links"] == []  # no udev database entry: all of this came from blkid
    assert (part["label"], part["uuid"], part["partuuid"], part["partlabel"]) == ("IMGVOL", UUID, PARTUUID, "tmpfsimg")


@pytest.mark.udev
def test_without_udevd_the_kernel_hook_names_the_source_by_its_uuid(gpt_loop, tmp_path):
    """A rescue system or a container preparing a disk with --root has no udevd: the source
    device has no /dev/disk links here. The build must still reach it by a name that exists
    now (its loop partition), but the kernel hook's settings, which a kernel update on the real
    host repeats, must name it as udev will there: /dev/disk/by-uuid/UUID."""
    target = make_tool_target(tmp_path / "target")
    with udevd_stopped():
        forget_udev_db(gpt_loop)
        plan = run_cli("plan", f"--root={target}", f"--source=UUID={UUID}", "--image=r.tar", "--json")
        done = run_cli("apply", f"--root={target}", f"--source=UUID={UUID}", "--image=r.tar", "--yes")
    assert plan.returncode == 0, plan.stderr
    [build] = [c for c in json.loads(plan.stdout)["commands"] if c[0] == "dracut"]
    assert build[build.index("--add-device") + 1] == f"{gpt_loop}p1"  # what dracut can follow here, now
    assert done.returncode == 0, done.stderr
    hook_env = (target / "etc/tmpfs-root/hook.env").read_text()
    assert f"--add-device /dev/disk/by-uuid/{UUID}" in hook_env, hook_env
    assert "/dev/loop" not in hook_env


@pytest.mark.udev
def test_devices_table(gpt_loop):
    result = run_cli("devices", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert f"{gpt_loop}p1" in result.stdout and "IMGVOL" in result.stdout and f"UUID={UUID}" in result.stdout


@pytest.mark.udev
def test_plan_checks_the_image_on_a_mounted_source(gpt_loop, tmp_path):
    """With the source mounted, plan finds a missing image, a non-archive, a tmpfs too small."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    target = make_fake_target(tmp_path / "target")
    sh("mount", f"{gpt_loop}p1", mnt)
    try:
        (mnt / "images").mkdir()
        (mnt / "images/notes.tar.zst").write_text("not an archive at all")
        payload = tmp_path / "payload"
        payload.write_bytes(b"\0" * (3 << 20))
        with tarfile.open(mnt / "images/root.tar", "w") as tar:
            tar.add(payload, arcname="big")
        base = ["plan", f"--root={target}", f"--source=UUID={UUID}"]
        missing = run_cli(*base, "--image=images/absent.tar.zst")
        assert missing.returncode == 2 and "not found on UUID=" in missing.stderr
        junk = run_cli(*base, "--image=images/notes.tar.zst")
        assert junk.returncode == 2 and "is not an archive" in junk.stderr
        small = run_cli(*base, "--image=images/root.tar", "--size=1M")
        assert small.returncode == 2 and "below the image's uncompressed size" in small.stderr
        fine = run_cli(*base, "--image=images/root.tar", "--size=64M")
        assert fine.returncode == 0, fine.stderr
    finally:
        sh("umount", mnt)


UMOCKDEV = REPO / "tests/data/nvme-lvm-raid.umockdev"


def umockdev_cli(*args):
    """The CLI under umockdev-run: pyudev sees the devices described in UMOCKDEV.

    This machine's kernel has no NVMe, device-mapper or md, so these layouts are
    described rather than made; loop devices above cover the real path.
    """
    import os
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run(
        ["umockdev-run", "-d", str(UMOCKDEV), "--", sys.executable, "-m", "tui", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    return p


@pytest.mark.needs("umockdev-run")
def test_nvme_lvm_raid_via_umockdev():
    p = umockdev_cli("devices", "--json")
    assert p.returncode == 0, p.stderr
    devices = _by_path(p.stdout)
    nvme = devices["/dev/nvme0n1p1"]
    assert nvme["type"] == "part" and nvme["model"] == "Samsung SSD 980 1TB"
    assert nvme["serial"] == "S64ANS0T123456" and nvme["parent"] == "nvme0n1"
    lv = devices["/dev/mapper/vg0-images"]
    assert lv["type"] == "lvm" and lv["lvm"] == "vg0/images"
    assert lv["extra_args"] == ["rd.lvm.lv=vg0/images"]
    md = devices["/dev/md0"]
    assert md["type"] == "raid" and md["extra_args"] == ["rd.md.uuid=3f2e1d0c:4b5a6978:8796a5b4:c3d2e1f0"]
    assert "/dev/zram0" not in devices  # zram is never a source
    assert "/dev/nvme0n1p2" not in devices  # an LVM PV holds no filesystem of its own


@pytest.mark.needs("umockdev-run")
def test_ambiguous_label_is_an_error_and_lvm_source_gets_rd_lvm(tmp_path):
    target = make_fake_target(tmp_path / "t")
    p = umockdev_cli("plan", f"--root={target}", "--source=LABEL=IMGVOL", "--image=r.tar")
    assert p.returncode == 2
    assert "matches 2 devices (/dev/nvme0n1p1, /dev/mapper/vg0-images)" in p.stderr
    p = umockdev_cli("plan", f"--root={target}", "--source=/dev/vg0/images", "--image=r.tar", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert "rd.lvm.lv=vg0/images" in data["cmdline"]
    assert any("lvm" in " ".join(c) for c in data["commands"] if c[0] == "dracut")


def test_recommended_identifier_prefers_uuid_and_only_unique_labels():
    a = BlockDevice("a", "/dev/a", "part", 1, label="X", partlabel="P")
    b = BlockDevice("b", "/dev/b", "part", 1, label="X", partlabel="Q")
    c = BlockDevice("c", "/dev/c", "part", 1, label="Y", uuid="u-1", partuuid="p-1")
    d = BlockDevice("d", "/dev/d", "part", 1, partuuid="p-2")
    assert recommended_identifier(c, [a, b, c]) == "UUID=u-1"
    assert recommended_identifier(d, [d]) == "PARTUUID=p-2"
    assert recommended_identifier(a, [a, b]) == "PARTLABEL=P"  # LABEL=X is shared
    e = BlockDevice("e", "/dev/e", "part", 1, label="X")
    assert recommended_identifier(e, [a, b, e]) == "/dev/e"


def test_mountinfo_parsing_unescapes_spaces():
    text = "36 35 259:1 / /mnt/my\\040images rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n"
    mounts = parse_mountinfo(text)
    assert mounts["259:1"] == ["/mnt/my images"]
    assert mounts["/dev/nvme0n1p1"] == ["/mnt/my images"]


@pytest.mark.udev
def test_a_stale_udev_database_is_checked_against_the_disk(tmp_path):
    """With no udevd (a rescue system), udev's database still describes what the device
    was: the disk itself decides, and the listing says so."""
    image = tmp_path / "disk.img"
    make_disk_image(image, [Part(16, "ext4", label="OLDLABEL")], tmp_path)
    with loop_device(image) as dev:
        with udevd():
            before = _by_path(run_cli("devices", "--json").stdout)[f"{dev}p1"]
        assert before["label"] == "OLDLABEL" and before["origin"] == "udev"
        with udevd_stopped():
            sh("mkfs.ext4", "-q", "-F", "-L", "NEWLABEL", f"{dev}p1")  # nobody updates the database
            result = run_cli("devices", "--json")
    part = _by_path(result.stdout)[f"{dev}p1"]
    assert part["label"] == "NEWLABEL" and part["recommended"] == f"UUID={part['uuid']}"
    assert "stale" in part["origin"]
    assert f"udev's database disagrees with the disk for {dev}p1" in result.stderr


@pytest.mark.needs("umockdev-run")
def test_the_device_list_in_a_pipe_keeps_every_identifier_whole_on_one_line():
    """lsblk's shape, in a pipe, at 80 columns: disks then their partitions and volumes below
    them, and each recommended identifier whole on its device's line, to be copied."""
    import os

    os.environ["COLUMNS"] = "80"
    try:
        listing = umockdev_cli("devices")
        data = json.loads(umockdev_cli("devices", "--json").stdout)
    finally:
        del os.environ["COLUMNS"]
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "TYPE", "SIZE"]  # a header never broken in two
    for dev in data:
        line = [x for x in lines if x.lstrip(" └─").startswith(dev["path"] + " ")]
        assert line, (dev["path"], listing.stdout)
        assert dev["recommended"] in line[0], (dev["recommended"], line[0])
    assert [x for x in lines if "└─" in x], listing.stdout  # partitions and volumes below their disk


# ------------------------------------------------------------- why no filesystem
class FakeUdev:
    """Just what tui.devices reads of a pyudev device: its name, node, properties, size."""

    def __init__(self, name: str, node: str, props: dict, devnum=(8, 99)):
        import os

        self.sys_name, self.device_node, self.properties = name, node, props
        self.device_number = os.makedev(*devnum)
        self.device_links: list[str] = []
        self.sys_path = "/nonexistent"
        self.attributes = self

    def asstring(self, name: str) -> str:
        if name == "size":
            return "2048"
        raise KeyError(name)

    def find_parent(self, *_):
        return None


def _device(udev, mountinfo: str = "", live: bool = True):
    from tui.devices import _from_udev, mount_types

    dev = _from_udev(udev, parse_mountinfo(mountinfo), live, mount_types(mountinfo))
    assert dev is not None
    return dev


def test_a_device_blkid_cannot_open_says_blkids_own_error(tmp_path, monkeypatch):
    """No udev data, and blkid fails: its error line is the reason (here as blkid says it to
    a user who may not read the node), else why the node cannot be read."""
    from tui.devices import no_filesystem

    node = str(tmp_path / "sdz")  # no such node: the real blkid says nothing
    dev = _device(FakeUdev("sdz", node, {}))
    assert dev.fstype is None and not dev.usable and dev.origin == "blkid"
    assert dev.why_no_fs == "not readable: No such file or directory"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "blkid").write_text('#!/bin/sh\necho "blkid: error: $4: Permission denied" >&2\nexit 2\n')
    (bin_dir / "blkid").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    dev = _device(FakeUdev("sdz", node, {}))
    assert dev.why_no_fs == f"blkid: 'error: {node}: Permission denied'"
    assert no_filesystem(dev) == f"no filesystem: {dev.why_no_fs}"


def test_a_device_with_no_signature_says_blkid_found_none(tmp_path):
    node = tmp_path / "blank"
    node.write_bytes(b"\0" * (1 << 20))  # zeros: blkid reads it and finds nothing
    assert _device(FakeUdev("sdy", str(node), {})).why_no_fs == "no udev data and blkid found no filesystem signature"
    described = _device(FakeUdev("sdy", str(node), {"ID_PART_ENTRY_UUID": PARTUUID}))
    assert described.why_no_fs == "udev found no filesystem signature"
    disk = _device(FakeUdev("sdy", str(node), {"ID_PART_TABLE_TYPE": "gpt"}))
    assert disk.why_no_fs == "a partition table ('gpt'): its partitions hold the filesystems"


def test_a_mounted_device_blkid_cannot_read_takes_its_type_from_the_mount_table(tmp_path):
    """A FUSE mount (ntfs-3g) of a node this user cannot read: the mount table says fuseblk."""
    node = str(tmp_path / "sdx1")
    mountinfo = f"40 30 0:52 / /mnt/win rw,relatime shared:9 - fuseblk {node} rw,user_id=0\n"
    dev = _device(FakeUdev("sdx1", node, {}), mountinfo)
    assert dev.fstype == "fuseblk" and dev.usable and dev.why_no_fs is None
    assert dev.mountpoints == ["/mnt/win"] and "mount table" in dev.origin
    unmounted = _device(FakeUdev("sdx1", node, {}))
    assert unmounted.fstype is None and unmounted.why_no_fs == "not readable: No such file or directory"


def test_devices_all_says_per_device_why_in_the_words_of_the_json_and_the_tui(monkeypatch):
    """`devices --all`, in a table and in JSON, lists every device, one without a filesystem
    with why; the TUI's line below its device list says the same."""
    from screens.source import device_detail
    from tests.infra import cli_inproc

    reason = "blkid: 'error: /dev/sdb: Permission denied'"
    devices = [
        BlockDevice("sdb", "/dev/sdb", "disk", 1 << 30, why_no_fs=reason),
        BlockDevice("sdc", "/dev/sdc", "disk", 1 << 30, fstype="swap"),
    ]
    monkeypatch.setattr("tui.devices.discover", lambda: devices)
    words = {"/dev/sdb": f"no filesystem: {reason}", "/dev/sdc": "swap is not a filesystem an image can be stored on"}
    assert "No block device with a filesystem" in cli_inproc("devices").stdout
    table = cli_inproc("devices", "--all", env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    for path, why in words.items():
        (line,) = [x for x in table.stdout.splitlines() if x.startswith(path + " ")]
        assert line.endswith(f"none: {why}")
        assert why in device_detail(next(d for d in devices if d.path == path))
    listed = _by_path(cli_inproc("devices", "--all", "--json").stdout)
    assert {p: d["why_no_fs"] for p, d in listed.items()} == words
