"""Real boots: the engine builds initramfs images with the real dracut and our
module inside a Debian 12 target, and QEMU (TCG) boots them against disk images.

The systemd flavour boots every case but failures the shell tests cover, dracut's shell
init those where the init makes a difference (SHELL_INIT_CASES). The boots of the whole
module run two at a time (one per core) the first time a test asks for one; each test
then reads its own serial log.
"""

import contextlib
import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.http_server import closed_port, http_server, make_ca
from tests.infra import (
    FLAVOURS,
    FLAVOURS_TRIXIE,
    MARKER,
    Part,
    build_test_initramfs,
    debian_target,
    install_test_module,
    make_disk_image,
    make_lvm_disk,
    make_test_rootfs,
    nfs_server,
    pack,
    qemu_boot,
    target_kernel,
)

pytestmark = [pytest.mark.qemu, pytest.mark.needs("qemu-system-x86_64", "debootstrap", "ganesha.nfsd")]

UUID = "5b1f9c8e-0d7a-4c39-9a51-0f6f4c2d8e11"
#: A FAT volume's UUID is upper case, as udev keeps it in /dev/disk/by-uuid.
FAT_UUID = "75A6-DBC3"
#: A label udev escapes in /dev/disk/by-label (IMG\x2cVOL\x212), and the CLI accepts.
ESCAPED_LABEL = "IMG,VOL!2"
PARTUUID = "8c2e6c9a-54e1-4b0e-9d0b-2f1a3c4d5e6f"
#: What a boot-once entry carries (panic=10 there; 1 here: the same path, 9 s less per failure)
ONCE = "rd.shell=0 rd.emergency=reboot panic=1"

# name: (kernel arguments, expected: "ok" or (message part, parameter))
CASES = {
    "path-tar": ("root=tmpfs:/dev/vda1 rd.tmpfs.imgfile=images/root.tar rd.tmpfs.size=64M", "ok"),
    "label-gzip": ("root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/root.tar.gz rd.tmpfs.size=64M", "ok"),
    "uuid-xz-sha256": (
        f"root=tmpfs:UUID={UUID} rd.tmpfs.imgfile=images/root.tar.xz rd.tmpfs.size=10% rd.tmpfs.sha256={{sha_xz}}",
        "ok",
    ),
    "partuuid-zstd-nosize": (f"root=tmpfs:PARTUUID={PARTUUID} rd.tmpfs.imgfile=images/root.tar.zst", "ok"),
    "partlabel-bzip2": (
        "root=tmpfs:PARTLABEL=tmpfsimg rd.tmpfs.imgfile=images/root.tar.bz2 "
        "rd.tmpfs.size=64M rd.tmpfs.opts=mpol=interleave",
        "ok",
    ),
    "nfs4-zstd": (
        "root=tmpfs:NFS=nfs4:10.0.2.2:/export,port={nfs_port} ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/root.tar.zst rd.tmpfs.size=64M",
        "ok",
    ),
    # NFS 4.1: Debian 13's kernel (6.12) reads with 4.2's READ_PLUS, which this machine's
    # userspace server (Debian 12's nfs-ganesha) answers with bytes that are not the file's
    "nfs41-zstd": (
        "root=tmpfs:NFS=nfs4:10.0.2.2:/export,port={nfs_port},vers=4.1 ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/root.tar.zst rd.tmpfs.size=64M",
        "ok",
    ),
    # streamed from a web server on this machine (10.0.2.2 to the guest): a sharded image
    # by range requests, pinned over plain http; one stream over https (the test CA is in
    # the initramfs as /etc/tmpfs-root/ca.pem)
    "http-sharded": (
        "root=tmpfs:http://10.0.2.2:{http_port}/ ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/sharded.tar.zst rd.tmpfs.sha256={sha_sharded}",
        "ok",
    ),
    "https-zstd": (
        "root=tmpfs:https://10.0.2.2:{https_port}/ ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/root.tar.zst rd.tmpfs.size=64M",
        "ok",
    ),
    "lvm-lz4": (
        "root=tmpfs:/dev/mapper/tvg-images rd.lvm.lv=tvg/images rd.tmpfs.imgfile=images/root.tar.lz4 rd.tmpfs.size=64M",
        "ok",
    ),
    # images made by `tmpfs-root image create`, which records their size for the boot; its
    # default zst image is sharded (unpacked in parallel), here with its sha256 pinned
    "fat-uuid-created-zst": (
        f"root=tmpfs:UUID={FAT_UUID} rd.tmpfs.imgfile=images/created.tar.zst rd.tmpfs.sha256={{sha_created}}",
        "ok",
    ),
    "escaped-label-created-gz": (f"root=tmpfs:LABEL={ESCAPED_LABEL} rd.tmpfs.imgfile=images/created.tar.gz", "ok"),
    "fault-missing": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/absent.tar.zst",
        ("images/absent.tar.zst not found on LABEL=IMGVOL", "rd.tmpfs.imgfile"),
    ),
    "fault-corrupt": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/corrupt.tar.zst rd.tmpfs.size=64M",
        ("corrupt.tar.zst is not a valid zstd archive", "rd.tmpfs.imgfile"),
    ),
    "fault-sha256": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/root.tar.gz rd.tmpfs.size=64M rd.tmpfs.sha256=" + "0" * 64,
        ("sha256 of the image is", "rd.tmpfs.sha256"),
    ),
    "fault-tampered-shard": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/tampered.tar.zst rd.tmpfs.sha256={sha_tampered}",
        ("shard 2 of 2: its sha256 is not the one in the image's index", "rd.tmpfs.sha256"),
    ),
    "fault-http-tampered": (
        "root=tmpfs:http://10.0.2.2:{http_port} ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/tampered.tar.zst rd.tmpfs.sha256={sha_tampered}",
        ("shard 2 of 2: its sha256 is not the one in the image's index", "rd.tmpfs.sha256"),
    ),
    # a hand-made image whose shard plants esc -> /etc and whose directory part writes
    # esc/pwned, pinned with its own (correct) index: the shard's tar makes no link
    "fault-link-in-shard": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/hostile.tar.zst rd.tmpfs.sha256={sha_hostile}",
        ("shard 1 of 1 holds a symbolic link (esc); only the image's last part may", "rd.tmpfs.imgfile"),
    ),
    "fault-http-404": (
        "root=tmpfs:http://10.0.2.2:{http_port} ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/absent.tar.zst rd.tmpfs.insecure=1",
        ("/images/absent.tar.zst: The requested URL returned error: 404", "root="),
    ),
    "fault-http-down": (
        "root=tmpfs:http://10.0.2.2:{down_port} ip=dhcp rd.neednet=1 rd.retry=10 "
        "rd.tmpfs.imgfile=images/root.tar.zst rd.tmpfs.insecure=1",
        ("Failed to connect to 10.0.2.2 port", "root="),
    ),
    "fault-http-died": (
        "root=tmpfs:http://10.0.2.2:{http_port}/die ip=dhcp rd.neednet=1 "
        "rd.tmpfs.imgfile=images/root.tar.zst rd.tmpfs.insecure=1",
        ("transfer closed with", "root="),
    ),
    "fault-too-small": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/root.tar rd.tmpfs.size=1M",
        ("is too small for images/root.tar", "rd.tmpfs.size"),
    ),
    "fault-full-gzip": (
        "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/big.tar.gz rd.tmpfs.size=2M",
        ("the tmpfs is full: the image does not fit in 2.0M", "rd.tmpfs.size"),
    ),
    "fault-no-source": (
        "root=tmpfs:LABEL=NOSUCHVOL rd.tmpfs.imgfile=images/root.tar rd.retry=10",
        ("source LABEL=NOSUCHVOL never appeared", "root="),
    ),
}


#: Without rd.shell=0 rd.emergency=reboot a failure takes dracut's default path: a shell.
SHELL_ARGS = "root=tmpfs:LABEL=IMGVOL rd.tmpfs.imgfile=images/absent.tar.zst"
#: What each flavour's emergency shell shows (systemd's dracut-emergency.service asks
#: for Enter first; dracut's shell init prompts with the name tr_fail gives it).
SHELL_SHOWS = {"systemd": "Entering emergency mode. Exit the shell to continue.", "nosystemd": "tmpfs-root:/# "}

#: The systemd flavour boots every case but the failures the shell tests cover. dracut's
#: shell init boots those where the init makes a difference beyond the hooks every boot
#: runs: the network (NFS, http) and the parallel workers with a pinned, tampered image;
#: its emergency shell below. Formats, identifier kinds and most failures are the same
#: shell code in both, and one flavour of each keeps CI under its time.
SHELL_INIT_CASES = {"nfs4-zstd", "http-sharded", "fault-tampered-shard"}
#: Failures the shell tests cover with the same code (tests/test_module_shell.py,
#: tests/test_image_shards.py, tests/test_module_http.py): left out of the VMs for CI's time.
SHELL_TESTED = {"fault-corrupt", "fault-too-small", "fault-sha256", "fault-http-tampered"}
#: The generic flavours as above; the host-only build boots one.
MATRIX = (
    [("systemd", c) for c in CASES if c not in SHELL_TESTED | {"nfs41-zstd"}]
    + [("nosystemd", c) for c in CASES if c in SHELL_INIT_CASES]
    + [("hostonly", "label-gzip")]
)
SHELL_MATRIX = [("systemd", "shell"), ("nosystemd", "shell")]


def matrix(ok: bool):
    return [pytest.param(f, c, id=f"{f}-{c}") for f, c in MATRIX if (CASES[c][1] == "ok") == ok]


class World:
    """Everything the boots share, built once: kernel, both initramfs images, disks; from the
    Debian 12 target (dracut 059), or the Debian 13 one (dracut-ng 106)."""

    def __init__(self, tmp: Path, suite: str = "bookworm", flavours: dict = FLAVOURS):
        self.tmp = tmp
        target = debian_target(suite)
        self.kver = target_kernel(target)
        self.kernel = target / f"boot/vmlinuz-{self.kver}"
        install_test_module(target)
        # The https boots trust a test CA: module-setup takes /etc/tmpfs-root/ca.pem into the
        # initramfs; it is in the shared target only while these images are built.
        self.tls = make_ca(tmp / "ca")
        ca_in_target = target / "etc/tmpfs-root/ca.pem"
        ca_in_target.parent.mkdir(exist_ok=True)
        shutil.copy(self.tls[0], ca_in_target)
        with contextlib.ExitStack() as cleanup, ThreadPoolExecutor(2) as pool:
            cleanup.callback(ca_in_target.parent.rmdir)  # after the file below
            cleanup.callback(ca_in_target.unlink)
            initrds = {f: pool.submit(build_test_initramfs, target, f, tmp, flavours) for f in flavours}
            rootfs = make_test_rootfs(tmp / "rootfs")
            content = tmp / "content"
            (content / "images").mkdir(parents=True)
            for fmt in ("tar", "gz", "xz", "zst", "bz2", "lz4"):
                pack(rootfs, content / f"images/root.tar.{fmt}".replace(".tar.tar", ".tar"), fmt)
            # Bigger than its tmpfs once unpacked, in a format that does not record its size.
            big = tmp / "bigroot"
            shutil.copytree(rootfs, big, symlinks=True)
            (big / "blob").write_bytes(bytes(range(256)) * 16384)
            pack(big, content / "images/big.tar.gz", "gz")
            zst = (content / "images/root.tar.zst").read_bytes()
            (content / "images/corrupt.tar.zst").write_bytes(zst[:64] + bytes(len(zst) - 64))
            sha_tampered = tampered_shard(rootfs, tmp, content / "images/tampered.tar.zst")
            sha_hostile = hostile_shard(tmp, content / "images/hostile.tar.zst")
            shutil.copy(tmp / "sharded.tar.zst", content / "images/sharded.tar.zst")
            # Values the cases' kernel arguments are formatted with.
            self.params = {
                "sha_xz": hashlib.sha256((content / "images/root.tar.xz").read_bytes()).hexdigest(),
                "sha_tampered": sha_tampered,
                "sha_sharded": sha_tampered,  # the tampered copy kept the index: the same pin
                "sha_hostile": sha_hostile,
            }
            self.disk = tmp / "disk.img"
            make_disk_image(
                self.disk,
                [Part(48, "ext4", label="IMGVOL", uuid=UUID, partlabel="tmpfsimg", partuuid=PARTUUID, content=content)],
                tmp,
            )
            lvm_content = tmp / "lvm-content"
            (lvm_content / "images").mkdir(parents=True)
            shutil.copy(content / "images/root.tar.lz4", lvm_content / "images")
            self.lvm_disk = tmp / "lvm.img"
            make_lvm_disk(self.lvm_disk, lvm_content, "LVMIMG", tmp)
            self.names_disk = tmp / "names.img"
            created = created_images(rootfs, tmp, "zst")
            self.params["sha_created"] = (created / "images/created.tar.zst.pin").read_text().strip()  # the boot's pin
            make_disk_image(
                self.names_disk,
                [
                    Part(32, "vfat", label="FATIMG", uuid=FAT_UUID, content=created),
                    Part(32, "ext4", label=ESCAPED_LABEL, content=created_images(rootfs, tmp, "gz")),
                ],
                tmp,
            )
            self.initrd = {f: fut.result() for f, fut in initrds.items()}
        self.content = content
        self.results = {}

    def boot(self, flavour: str, case: str):
        log = self.tmp / f"boot-{flavour}-{case}.log"
        if case == "shell":
            return qemu_boot(
                self.kernel, self.initrd[flavour], SHELL_ARGS, [self.disk], log, until=SHELL_SHOWS[flavour]
            )
        append = CASES[case][0].format(**self.params)
        extra = {"lvm": [self.lvm_disk], "fat": [self.names_disk], "escaped": [self.names_disk]}
        disks = [self.disk, *extra.get(case.split("-")[0], [])]
        network = case.startswith(("nfs", "http", "fault-http"))
        return qemu_boot(self.kernel, self.initrd[flavour], f"{append} {ONCE}", disks, log, network=network)

    def boot_all(self, wanted):
        todo = [w for w in wanted if w not in self.results]
        with contextlib.ExitStack() as stack:
            if any(case.startswith("nfs") for _, case in todo):
                # The same files as on the disk, exported by a userspace NFS server on loopback.
                self.params["nfs_port"] = stack.enter_context(nfs_server(self.content, self.tmp / "nfs"))
            if any("http" in case for _, case in todo):
                # ... and served over HTTP and HTTPS, with range requests.
                self.params["http_port"] = stack.enter_context(http_server(self.content)).port
                self.params["https_port"] = stack.enter_context(http_server(self.content, tls=self.tls[1:])).port
                self.params["down_port"] = closed_port()
            with ThreadPoolExecutor(2) as pool:  # one VM per core
                for key, result in zip(todo, pool.map(lambda w: self.boot(*w), todo), strict=True):
                    self.results[key] = result


def created_images(rootfs: Path, tmp: Path, fmt: str) -> Path:
    """A volume's content: the test root packed by `tmpfs-root image create` into images/."""
    from tui.image_create import create, make_plan

    content = tmp / f"created-{fmt}"
    (content / "images").mkdir(parents=True)
    create(make_plan(str(rootfs), str(content / f"images/created.tar.{fmt}"), fmt))
    return content


def tampered_shard(rootfs: Path, tmp: Path, out: Path) -> str:
    """A sharded image of two shards with one byte of the second changed; returns the
    sha256 to pin (its index's, which the change leaves as it was)."""
    import os

    from tui import image_index
    from tui.image_create import create, make_plan

    made = create(make_plan(str(rootfs), str(tmp / "sharded.tar.zst"), "zst", shards=2))
    data = bytearray(Path(made.path).read_bytes())
    fd = os.open(made.path, os.O_RDONLY)
    try:
        second = image_index.read(fd).parts[1]
    finally:
        os.close(fd)
    data[second.offset + second.length // 2] ^= 0x10
    out.write_bytes(bytes(data))
    return made.pin


def hostile_shard(tmp: Path, out: Path) -> str:
    """A sharded image whose one shard holds esc -> /etc and whose directory part holds
    esc/pwned (tests/test_hostile_images.py's first row); returns its index's sha256."""
    from tests.test_hostile_images import ROOT, member, sharded, tar_of

    shard = tar_of([member("a", data=b"a"), member("esc", "sym", link="/etc")], tmp)
    dirs = tar_of([*ROOT, member("sbin", "dir"), member("esc/pwned", data=b"x")], tmp)
    return sharded(out, [shard, dirs])


def _wanted(request, fixture: str) -> list[tuple[str, str]]:
    """The (flavour, case) boots the collected tests of this module ask *fixture* for."""
    return [
        (item.callspec.params["flavour"], item.callspec.params["case"])
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec") and fixture in item.fixturenames
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    w = World(tmp_path_factory.mktemp("boot"))
    w.boot_all(_wanted(request, "world"))
    return w


@pytest.fixture(scope="module")
def world13(tmp_path_factory, request):
    w = World(tmp_path_factory.mktemp("boot13"), "trixie", FLAVOURS_TRIXIE)
    w.boot_all(_wanted(request, "world13"))
    return w


def _log_tail(boot) -> str:
    return "\n".join(boot.log.splitlines()[-40:])


@pytest.mark.parametrize("flavour,case", matrix(ok=True))
def test_boots_into_tmpfs(world, flavour, case):
    boot = world.results[(flavour, case)]
    assert boot.returncode is not None, "hung until the timeout:\n" + _log_tail(boot)
    assert "TMPFS-ROOT-TEST: / is tmpfs" in boot.log, _log_tail(boot)
    assert f"TMPFS-ROOT-TEST: marker {MARKER}" in boot.log, _log_tail(boot)
    assert "TMPFS-ROOT-TEST: hardlink 2" in boot.log, _log_tail(boot)
    assert "tmpfs-root: root filesystem ready in RAM" in boot.log
    if case == "uuid-xz-sha256":
        assert "tmpfs-root: sha256 verified" in boot.log
    if case == "fat-uuid-created-zst":  # sharded, pinned: the index and every shard checked
        assert boot.lines("tmpfs-root: unpacked") and "(sharded: " in boot.lines("tmpfs-root: unpacked")[0]
        assert "tmpfs-root: sha256 verified: the index and every shard" in boot.log
    if case in ("partuuid-zstd-nosize", "fat-uuid-created-zst", "escaped-label-created-gz"):
        # the image's real size is known at boot: from the zstd frame, or recorded by image create
        chosen = boot.lines("tmpfs-root: tmpfs of")
        assert chosen and "uncompressed" in chosen[0] and "headroom" in chosen[0], chosen


@pytest.mark.parametrize("flavour,case", matrix(ok=False))
def test_fault_names_cause_and_parameter_then_reboots(world, flavour, case):
    boot = world.results[(flavour, case)]
    message, parameter = CASES[case][1]
    assert boot.returncode is not None, "hung instead of rebooting:\n" + _log_tail(boot)
    ours = [line for line in boot.lines("tmpfs-root: ") if message in line]
    assert ours, _log_tail(boot)
    assert ours[0].endswith(f"({parameter})"), ours[0]
    assert "TMPFS-ROOT-TEST" not in boot.log  # never switched into a half-made root


@pytest.mark.parametrize("flavour,case", SHELL_MATRIX, ids=[f for f, _ in SHELL_MATRIX])
def test_fault_without_boot_once_args_opens_the_emergency_shell(world, flavour, case):
    boot = world.results[(flavour, case)]
    assert boot.reached, "no emergency shell prompt:\n" + _log_tail(boot)
    ours = [line for line in boot.lines("tmpfs-root: ") if "absent.tar.zst not found" in line]
    assert ours and ours[0].endswith("(rd.tmpfs.imgfile)"), _log_tail(boot)
    assert "TMPFS-ROOT-TEST" not in boot.log


#: Debian 13: dracut-ng 106 and systemd 257 (a kernel version with "+"): the module in both
#: inits, by a FAT volume's UUID with an image made by image create, and a failure; the
#: generic build (`dracut -N -a tmpfs-root`, nothing else named) boots NFS and HTTP too.
TRIXIE_MATRIX = [(f, "fat-uuid-created-zst") for f in FLAVOURS_TRIXIE] + [
    ("systemd", c) for c in ("fault-missing", "nfs41-zstd", "http-sharded")
]


@pytest.mark.parametrize("flavour,case", TRIXIE_MATRIX, ids=[f"{f}-{c}" for f, c in TRIXIE_MATRIX])
def test_debian_13_boots_and_fails_the_same_way(world13, flavour, case):
    assert "+" in world13.kver, world13.kver  # trixie's kernel versions carry a "+"
    boot = world13.results[(flavour, case)]
    if CASES[case][1] == "ok":
        assert boot.returncode is not None, "hung until the timeout:\n" + _log_tail(boot)
        assert "TMPFS-ROOT-TEST: / is tmpfs" in boot.log, _log_tail(boot)
        assert f"TMPFS-ROOT-TEST: marker {MARKER}" in boot.log
        chosen = boot.lines("tmpfs-root: tmpfs of")
        given = "rd.tmpfs.size=" in CASES[case][0]  # else chosen from the image's recorded size
        assert chosen and ("(rd.tmpfs.size=" if given else "uncompressed") in chosen[0], chosen
    else:
        message, parameter = CASES[case][1]
        ours = [line for line in boot.lines("tmpfs-root: ") if message in line]
        assert ours and ours[0].endswith(f"({parameter})"), _log_tail(boot)
        assert "TMPFS-ROOT-TEST" not in boot.log


def test_debian_13_without_systemd_keeps_the_module_and_says_why_network_sources_cannot_boot(world13):
    """No DHCP client for dracut's shell-init network there: the generic build leaves nfs and
    url-lib out with a warning instead of dropping tmpfs-root (its local boot is above)."""
    log = (world13.tmp / "dracut-nosystemd.log").read_text()
    warned = [line for line in log.splitlines() if "this initramfs cannot boot" in line]
    assert any("NFS sources" in line for line in warned) and any("HTTP(S) sources" in line for line in warned), log
    assert "Including module: tmpfs-root" in log
