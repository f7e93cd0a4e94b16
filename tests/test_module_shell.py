"""The dracut module's shell, without a VM: shellcheck, and every branch of the
library and the hooks run under dash and busybox sh with dracut's functions
stubbed (getarg from a fake command line, emergency_shell recorded)."""

import atexit
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.infra import REPO, Part, loop_device, make_disk_image, make_test_rootfs, pack, udevd
from tui.devices import blkid_probe
from tui.dracut import MODULE_SOURCE

SHELLS = [["dash"], ["busybox", "sh"]]
#: The library the hooks source.
LIB = MODULE_SOURCE / "tmpfs-root-lib.sh"
#: Every library, in the order /sbin/tmpfs-root-fill sources them: what a test of their
#: functions sources.
LIBS = [LIB, *(MODULE_SOURCE / f"tmpfs-root-{name}-lib.sh" for name in ("img", "url", "shards"))]
SOURCE_LIBS = "".join(f". {lib}\n" for lib in LIBS)
FILL = MODULE_SOURCE / "tmpfs-root-fill.sh"

STUBS = r"""
getarg() {
    _k=${1%=}
    for _a in $CMDLINE; do
        case "$_a" in "$_k="*) echo "${_a#"$_k="}"; return 0 ;; esac
    done
    return 1
}
getargbool() {
    _v=$(getarg "$2=") || { [ "$1" = 1 ]; return; }
    case "$_v" in 0 | no | off) return 1 ;; esac
    return 0
}
warn() { echo "warn: $*" >&2; }
wait_for_dev() { echo "WAIT_FOR_DEV $*"; }
emergency_shell() { echo "EMERGENCY $*"; }
ismounted() { return 1; }
mount() {
    case "$*" in
        *"-t tmpfs"*) echo "MOUNT_TMPFS $*" ;;
        *remount*) echo "REMOUNT $*" ;;
        *) rmdir "$TR_SRC_MNT" && ln -s "$SOURCE_DIR" "$TR_SRC_MNT" ;;
    esac
}
umount() { [ -L "$1" ] && rm "$1"; return 0; }
"""


_STUB_DIR = Path(tempfile.mkdtemp(prefix="tmpfs-root-stubs-"))
atexit.register(shutil.rmtree, _STUB_DIR, True)
#: The stubs as a file: what /sbin/tmpfs-root-fill sources for dracut-lib.sh (TR_DRACUT_LIB).
STUBS_FILE = _STUB_DIR / "dracut-lib.sh"
STUBS_FILE.write_text(STUBS)


def fill_program(shell) -> Path:
    """/sbin/tmpfs-root-fill as the pre-mount hook runs it (TR_FILL), under *shell*."""
    wrapper = _STUB_DIR / f"tmpfs-root-fill-{shell[0]}"
    if not wrapper.exists():
        argv = " ".join([str(shutil.which(shell[0])), *shell[1:]])
        wrapper.write_text(f'#!/bin/sh\nexec {argv} {FILL} "$@"\n')
        wrapper.chmod(0o755)
    return wrapper


def run_sh(shell, script: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """*script* under *shell* with dracut's functions stubbed and every library sourced; the
    pre-mount hook's fill runs as its own program under the same shell, with the same stubs."""
    return subprocess.run(
        [*shell, "-c", STUBS + SOURCE_LIBS + script],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "TR_DRACUT_LIB": str(STUBS_FILE),
            "TR_LIBDIR": str(MODULE_SOURCE),
            "TR_FILL": str(fill_program(shell)),
            **(env or {}),
        },
        cwd=cwd,
        timeout=60,
    )


def test_shellcheck_clean():
    files = sorted(str(p) for p in MODULE_SOURCE.glob("*.sh"))
    posix = [f for f in files if not f.endswith("module-setup.sh")]
    posix += [str(REPO / "tui/hooks/tmpfs-root-kernel-hook"), str(REPO / "tui/grub/42_tmpfs-root")]
    r = subprocess.run(
        ["shellcheck", "-x", "--source-path=SCRIPTDIR", "-s", "sh", *posix], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout
    r = subprocess.run(
        ["shellcheck", "-s", "bash", str(MODULE_SOURCE / "module-setup.sh"), str(REPO / "tui/grub/42_tmpfs-root")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout


@pytest.mark.needs("shfmt")
def test_shfmt_clean():
    """Every file of the module in one layout, beside shellcheck: shfmt's with 4 spaces, case
    items indented, a space after redirections, && and | starting a continued line (-i 4 -ci
    -sr -bn, Debian 12's shfmt 3.6)."""
    files = sorted(str(p) for p in MODULE_SOURCE.iterdir() if p.is_file())
    r = subprocess.run(["shfmt", "-d", "-i", "4", "-ci", "-sr", "-bn", *files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize(
    "source,dev",
    [
        ("LABEL=IMG VOL/1", r"/dev/disk/by-label/IMG\x20VOL\x2f1"),
        ("LABEL=a&b(1)", r"/dev/disk/by-label/a\x26b\x281\x29"),
        ("LABEL=IMG,VOL!2", r"/dev/disk/by-label/IMG\x2cVOL\x212"),
        ("LABEL=x\\y", r"/dev/disk/by-label/x\x5cy"),
        ("LABEL=été #+-.:=@_", r"/dev/disk/by-label/été\x20#+-.:=@_"),
        ("PARTLABEL=images", "/dev/disk/by-partlabel/images"),
        ("UUID=ABCD-1234", "/dev/disk/by-uuid/ABCD-1234"),  # FAT: udev keeps the case
        ("UUID=0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff", "/dev/disk/by-uuid/0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff"),
        ("PARTUUID=8c2e6c9a-01", "/dev/disk/by-partuuid/8c2e6c9a-01"),
        ("/dev/mapper/vg-lv", "/dev/mapper/vg-lv"),
    ],
)
def test_source_to_device(shell, source, dev):
    r = run_sh(shell, 'tr_source_dev "$SOURCE"', {"SOURCE": source})
    assert r.stdout.strip() == dev


@pytest.mark.udev
@pytest.mark.parametrize(
    "fs,label,size",
    [("ext4", "a&b(1) x", 16), ("vfat", "FAT VOL(1)", 16), ("xfs", "x y,z!", 320), ("btrfs", "b&t(r)f s", 128)],
)
def test_every_source_form_names_the_link_udev_makes(tmp_path, fs, label, size):
    """On a real loop device under a real udevd, for each filesystem: what tr_source_dev makes
    of LABEL=, UUID= (FAT's upper case kept), PARTUUID= and PARTLABEL= is the link udev made."""
    partlabel = f"{fs} part&(1)"
    image = tmp_path / "disk.img"
    make_disk_image(image, [Part(size, fs, label=label, partlabel=partlabel)], tmp_path)
    with loop_device(image) as dev, udevd():
        probe = blkid_probe(f"{dev}p1")
        assert probe["LABEL"] == label
        for source in (
            f"LABEL={label}",
            f"UUID={probe['UUID']}",
            f"PARTUUID={probe['PART_ENTRY_UUID']}",
            f"PARTLABEL={partlabel}",
        ):
            for shell in SHELLS:
                path = run_sh(shell, 'tr_source_dev "$SOURCE"', {"SOURCE": source}).stdout.strip()
                assert os.path.exists(path), (source, path, os.listdir(os.path.dirname(path)))
                assert os.path.realpath(path) == f"{dev}p1", (source, path)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arch")
    root = make_test_rootfs(tmp / "root")
    out = {fmt: pack(root, tmp / f"root.{fmt}", fmt) for fmt in ("tar", "gz", "xz", "zst", "bz2", "lz4")}
    (tmp / "junk").write_text("hello, not an archive\n" * 40)
    out["junk"] = tmp / "junk"
    return out


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_format_by_magic_bytes(shell, archives):
    names = {"tar": "tar", "gz": "gzip", "xz": "xz", "zst": "zstd", "bz2": "bzip2", "lz4": "lz4", "junk": "unknown"}
    for key, expected in names.items():
        assert run_sh(shell, f'tr_format "{archives[key]}"').stdout.strip() == expected, key


def test_uncompressed_size_when_recorded(archives):
    tar_size = archives["tar"].stat().st_size
    for fmt in ("tar", "xz", "zst"):
        got = run_sh(["dash"], f'tr_uncompressed_size "{archives[fmt]}" {dict(tar="tar", xz="xz", zst="zstd")[fmt]}')
        assert got.stdout.strip() == str(tar_size), fmt
    assert run_sh(["dash"], f'tr_uncompressed_size "{archives["gz"]}" gzip').stdout.strip() == ""


@pytest.fixture
def meminfo(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:        1048576 kB\nMemAvailable:     900000 kB\n")
    return {"TR_MEMINFO": str(f)}


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize(
    "size,expected",
    [
        ("2G", 2 << 30),
        ("512m", 512 << 20),
        ("100k", 100 << 10),
        ("4096", 4096),
        ("50%", 512 << 20),
        ("3Q", None),
        ("1.5G", None),
        ("G", None),
        ("", None),
    ],
)
def test_size_grammar(shell, meminfo, size, expected):
    r = run_sh(shell, f'tr_size_bytes "{size}"', meminfo)
    assert (r.stdout.strip() if r.returncode == 0 else None) == (str(expected) if expected else None)


def test_size_chosen_without_rd_tmpfs_size(meminfo):
    def choose(given, usize):
        return run_sh(["dash"], f'tr_choose_size "{given}" "{usize}"', meminfo).stdout.strip()

    assert choose("2G", "") == f"{2 << 30} rd.tmpfs.size=2G"
    assert choose("", str(100 << 20)).startswith(f"{(100 << 20) + (256 << 20)} image 100.0M")
    big = 700 << 20  # half again would pass 90% of the 1 GiB RAM: capped
    assert choose("", str(big)).split()[0] == str((1 << 30) * 9 // 10)
    assert choose("", "") == f"{512 << 20} 50% of RAM, image size unknown"


@pytest.mark.parametrize(
    "opts,bad",
    [
        ("mpol=interleave,huge=within_size", ""),
        ("nr_inodes=10k", ""),
        ("size=1G", "size=1G"),
        ("mpol=interleave,uid=0", "uid=0"),
        ("huge=advise", ""),
        ("mpol=interleave,huge=always", "huge=always"),  # a 2 MiB page of RAM for every file
    ],
)
def test_tmpfs_opts(opts, bad):
    r = run_sh(["dash"], f'tr_check_opts "{opts}"')
    assert (r.returncode == 0) == (bad == "") and r.stdout.strip() == bad


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize("fmt", ["tar", "gz", "xz", "zst", "bz2", "lz4"])
def test_unpack_each_format_with_progress_and_hash(shell, archives, tmp_path, fmt):
    dest, run = tmp_path / "dest", tmp_path / "run"
    dest.mkdir(), run.mkdir()
    sha = hashlib.sha256(archives[fmt].read_bytes()).hexdigest()
    kind = run_sh(shell, f'tr_format "{archives[fmt]}"').stdout.strip()
    r = run_sh(shell, f'tr_unpack "{archives[fmt]}" {kind} "{dest}" {sha}; echo rc=$?', {"TR_RUN": str(run)})
    assert "rc=0" in r.stdout, r.stderr
    assert (dest / "etc/marker").read_text().startswith("tmpfs-root-marker")
    assert (dest / "etc/marker").stat().st_nlink == 2  # hard link kept
    assert "sha256 verified" in r.stderr


def test_unpack_reports_progress_while_reading(archives, tmp_path):
    big_root = tmp_path / "big"
    make_test_rootfs(big_root)
    (big_root / "blob").write_bytes(os.urandom(32 << 20))
    archive = pack(big_root, tmp_path / "big.gz", "gz")
    dest, run = tmp_path / "dest", tmp_path / "run"
    dest.mkdir(), run.mkdir()
    r = run_sh(["dash"], f'tr_unpack "{archive}" gzip "{dest}" ""', {"TR_RUN": str(run), "TR_PROGRESS_EVERY": "0.05"})
    progress = [line for line in r.stderr.splitlines() if "unpacking:" in line]
    assert progress, r.stderr
    assert "MB/s" in progress[-1] and "%" in progress[-1]


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_unpack_failures_say_why(shell, archives, tmp_path):
    run, dest = tmp_path / "run", tmp_path / "dest"
    run.mkdir(), dest.mkdir()
    data = archives["zst"].read_bytes()
    corrupt = tmp_path / "corrupt.zst"
    corrupt.write_bytes(data[:64] + bytes(len(data) - 64))
    r = run_sh(shell, f'tr_unpack "{corrupt}" zstd "{dest}" ""; echo rc=$?', {"TR_RUN": str(run)})
    assert "rc=1" in r.stdout and "not a valid zstd archive" in (run / "why").read_text()
    r = run_sh(shell, f'tr_unpack "{archives["gz"]}" gzip "{dest}" {"0" * 64}; echo rc=$?', {"TR_RUN": str(run)})
    assert "rc=3" in r.stdout and "sha256 of the image is" in (run / "why").read_text()


# ------------------------------------------------------------ the hooks
def fake_dev(tmp_path) -> Path:
    """A block device node under /dev (root=tmpfs:/dev/... must be there); the mount stub
    never opens it. Removed again by the autouse fixture below."""
    return Path(f"/dev/tmpfs-root-test-{tmp_path.name}")


@pytest.fixture(autouse=True)
def _fake_dev_node(tmp_path):
    node = fake_dev(tmp_path)
    subprocess.run(["mknod", str(node), "b", "7", "250"], check=False, capture_output=True)
    yield
    node.unlink(missing_ok=True)


def run_hook(shell, tmp_path, cmdline: str, source_dir: Path | None = None, hook="tmpfs-root.sh"):
    run = tmp_path / "run"
    newroot = tmp_path / "newroot"
    newroot.mkdir(exist_ok=True)
    fake = fake_dev(tmp_path)
    cmdline = cmdline.replace("@DEV@", str(fake))
    env = {
        "CMDLINE": cmdline,
        "TR_RUN": str(run),
        "NEWROOT": str(newroot),
        "SOURCE_DIR": str(source_dir or tmp_path / "nosource"),
        "TR_MEMINFO": "/proc/meminfo",
    }
    return run_sh(shell, f". {MODULE_SOURCE / hook}", env)


@pytest.fixture
def source_dir(tmp_path, archives):
    d = tmp_path / "source"
    (d / "images").mkdir(parents=True)
    for fmt in ("tar", "zst"):
        (d / f"images/root.{fmt}").write_bytes(archives[fmt].read_bytes())
    (d / "images/junk").write_bytes(archives["junk"].read_bytes())
    return d


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize(
    "args,message,param",
    [
        ("rd.tmpfs.size=1G", "no image given", "rd.tmpfs.imgfile"),
        ("rd.tmpfs.imgfile=/abs.tar", "must be a relative path", "rd.tmpfs.imgfile"),
        ("rd.tmpfs.imgfile=../x.tar", "must be a relative path", "rd.tmpfs.imgfile"),
        ("rd.tmpfs.imgfile=images/root.tar rd.tmpfs.size=3Q", "is not a tmpfs size", "rd.tmpfs.size"),
        ("rd.tmpfs.imgfile=images/root.tar rd.tmpfs.sha256=xyz", "is not a sha256", "rd.tmpfs.sha256"),
        ("rd.tmpfs.imgfile=images/root.tar rd.tmpfs.opts=size=1G", "tmpfs option 'size=1G'", "rd.tmpfs.opts"),
        (
            "rd.tmpfs.imgfile=images/root.tar rd.tmpfs.opts=huge=always",
            "huge=always not accepted: every file of the root would take a 2 MiB page of RAM",
            "rd.tmpfs.opts",
        ),
        ("rd.tmpfs.imgfile=images/absent.tar", "images/absent.tar not found on @DEV@", "rd.tmpfs.imgfile"),
        ("rd.tmpfs.imgfile=images/junk", "images/junk is not an archive", "rd.tmpfs.imgfile"),
        ("rd.tmpfs.imgfile=images/root.tar rd.tmpfs.size=4k", "is too small for images/root.tar", "rd.tmpfs.size"),
    ],
)
def test_pre_mount_hook_failures(shell, tmp_path, source_dir, args, message, param):
    r = run_hook(shell, tmp_path, f"root=tmpfs:@DEV@ {args}", source_dir)
    message = message.replace("@DEV@", str(fake_dev(tmp_path)))
    said = [line for line in r.stderr.splitlines() if line.startswith("tmpfs-root: ")]
    assert said and message in said[-1] and said[-1].endswith(f"({param})"), r.stderr
    assert "EMERGENCY -n tmpfs-root tmpfs-root: " in r.stdout
    if param == "rd.tmpfs.size":  # the RAM-fit check runs before the tmpfs is mounted
        assert "MOUNT_TMPFS" not in r.stdout


def test_pre_mount_hook_source_missing(tmp_path):
    r = run_hook(["dash"], tmp_path, "root=tmpfs:LABEL=NOSUCH rd.tmpfs.imgfile=x.tar")
    assert "source LABEL=NOSUCH not found (/dev/disk/by-label/NOSUCH missing) (root=)" in r.stderr


def test_pre_mount_hook_fills_newroot(tmp_path, source_dir):
    r = run_hook(["dash"], tmp_path, "root=tmpfs:@DEV@ rd.tmpfs.imgfile=images/root.zst", source_dir)
    assert "MOUNT_TMPFS -t tmpfs -o mode=0755,size=" in r.stdout, r.stderr
    assert (tmp_path / "newroot/etc/marker").exists()
    assert "root filesystem ready in RAM" in r.stderr
    assert "EMERGENCY" not in r.stdout
    # carried into the booted system as /run/tmpfs-root, where apply takes its lock: root's alone
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700


def test_pre_mount_hook_ignores_other_roots(tmp_path):
    r = run_hook(["dash"], tmp_path, "root=UUID=1234 rd.tmpfs.imgfile=x.tar")
    assert r.returncode == 0 and r.stdout == "" and "tmpfs-root" not in r.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_cmdline_hook_claims_root_and_waits_for_the_device(shell, tmp_path):
    r = run_hook(shell, tmp_path, "root=tmpfs:LABEL=IMGVOL", hook="parse-tmpfs-root.sh")
    assert "WAIT_FOR_DEV /dev/disk/by-label/IMGVOL" in r.stdout
    r = run_sh(
        shell,
        f". {MODULE_SOURCE / 'parse-tmpfs-root.sh'}; echo rootok=$rootok",
        {"CMDLINE": "root=tmpfs:NFS=nfs:10.0.0.1:/srv"},
    )
    assert "rootok=1" in r.stdout and "WAIT_FOR_DEV" not in r.stdout
    r = run_sh(shell, f". {MODULE_SOURCE / 'parse-tmpfs-root.sh'}; echo rootok=$rootok", {"CMDLINE": "root=/dev/sda1"})
    assert "rootok=\n" in r.stdout


def test_emergency_hook_names_the_missing_source(tmp_path):
    r = run_sh(
        ["dash"], f". {MODULE_SOURCE / 'tmpfs-root-emergency.sh'}", {"CMDLINE": "root=tmpfs:LABEL=GONE rd.retry=10"}
    )
    assert "source LABEL=GONE never appeared in 10 s (rd.retry); /dev/disk/by-label/GONE is missing (root=)" in r.stderr


def test_generator_overrides_sysroot_mount_only_for_tmpfs_roots(tmp_path):
    gen = MODULE_SOURCE / "tmpfs-root-generator.sh"
    for cmdline, expected in (("root=tmpfs:LABEL=X", True), ("root=UUID=1", False)):
        out = tmp_path / cmdline.replace("=", "_").replace(":", "_")
        run_sh(["dash"], f'set -- "{out}/normal" "{out}/early" "{out}/late"; . {gen}', {"CMDLINE": cmdline})
        unit = out / "early/sysroot.mount"
        assert unit.exists() == expected
        if expected:
            text = unit.read_text()
            assert "Type=tmpfs" in text and "Where=/sysroot" in text


def test_ram_fit_check_at_boot(tmp_path, source_dir):
    """The image must fit in the RAM available, whatever rd.tmpfs.size says; a size above
    RAM is only a warning (tmpfs may be sized above RAM, it is a limit)."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {1 << 20} kB\nMemAvailable: {65 << 10} kB\n")  # 1 GiB, 65 MiB free
    env_meminfo = {"TR_MEMINFO": str(meminfo)}
    node = fake_dev(tmp_path)
    base = {"TR_RUN": str(tmp_path / "run"), "NEWROOT": str(tmp_path / "newroot"), "SOURCE_DIR": str(source_dir)}
    (tmp_path / "newroot").mkdir()
    hook = MODULE_SOURCE / "tmpfs-root.sh"
    r = run_sh(
        ["dash"],
        f". {hook}",
        {**base, **env_meminfo, "CMDLINE": f"root=tmpfs:{node} rd.tmpfs.imgfile=images/root.tar rd.tmpfs.size=64M"},
    )
    said = [line for line in r.stderr.splitlines() if line.startswith("tmpfs-root: ")]
    assert said and "needs 1.9M of RAM uncompressed, only 65.0M available (rd.tmpfs.imgfile)" in said[-1], r.stderr
    assert "MOUNT_TMPFS" not in r.stdout
    meminfo.write_text(f"MemTotal: {1 << 20} kB\nMemAvailable: {900 << 10} kB\n")
    base["TR_RUN"] = str(tmp_path / "run2")  # the stubbed source "mount" of the first run is a symlink
    r = run_sh(
        ["dash"],
        f". {hook}",
        {**base, **env_meminfo, "CMDLINE": f"root=tmpfs:{node} rd.tmpfs.imgfile=images/root.tar rd.tmpfs.size=2G"},
    )
    assert "warning: tmpfs size 2.0G is above RAM (1.0G)" in r.stderr
    assert "root filesystem ready in RAM" in r.stderr


def test_selinux_contexts_restored_only_when_the_new_root_enables_selinux(tmp_path):
    newroot = tmp_path / "newroot"
    (newroot / "etc/selinux").mkdir(parents=True)
    (newroot / "sbin").mkdir()
    load_policy = newroot / "sbin/load_policy"
    load_policy.write_text("#!/bin/sh\n")
    load_policy.chmod(0o755)
    hook = MODULE_SOURCE / "tmpfs-root-selinux.sh"
    stub = 'chroot() { echo "CHROOT $*"; }\n'
    for mode, expected in (("enforcing", True), ("permissive", True), ("disabled", False)):
        (newroot / "etc/selinux/config").write_text(f"SELINUX={mode}\nSELINUXTYPE=targeted\n")
        r = run_sh(["dash"], stub + f". {hook}", {"CMDLINE": "root=tmpfs:LABEL=X", "NEWROOT": str(newroot)})
        calls = [line for line in r.stdout.splitlines() if line.startswith("CHROOT")]
        if expected:
            assert calls == [
                f"CHROOT {newroot} /sbin/load_policy -i",
                f"CHROOT {newroot} restorecon -R -e /proc -e /sys -e /dev /",
            ], r.stdout
        else:
            assert calls == []
    r = run_sh(["dash"], stub + f". {hook}", {"CMDLINE": "root=UUID=1", "NEWROOT": str(newroot)})
    assert "CHROOT" not in r.stdout  # not a tmpfs-root boot: not ours to touch


def test_nfs_source_without_nfs_support_in_the_initramfs(tmp_path):
    """On this machine there is no /lib/nfs-lib.sh, as in an initramfs built without dracut's nfs."""
    assert not Path("/lib/nfs-lib.sh").exists()
    r = run_hook(["dash"], tmp_path, "root=tmpfs:NFS=nfs4:10.0.0.1:/srv rd.tmpfs.imgfile=r.tar")
    assert "tmpfs-root: no NFS support in this initramfs (add dracut's nfs module) (root=)" in r.stderr


def test_nfs_source_is_mounted_with_dracuts_nfs_lib_then_made_read_only(tmp_path, source_dir):
    (tmp_path / "newroot").mkdir()
    nfslib = tmp_path / "nfs-lib.sh"
    nfslib.write_text('mount_nfs() { echo "MOUNT_NFS $1 $2"; rmdir "$2" && ln -s "$SOURCE_DIR" "$2"; }\n')
    r = run_sh(
        ["dash"],
        f". {MODULE_SOURCE / 'tmpfs-root.sh'}",
        {
            "CMDLINE": "root=tmpfs:NFS=nfs4:10.0.2.2:/export,port=2049 rd.tmpfs.imgfile=images/root.zst rw",
            "TR_NFS_LIB": str(nfslib),
            "TR_RUN": str(tmp_path / "run"),
            "NEWROOT": str(tmp_path / "newroot"),
            "SOURCE_DIR": str(source_dir),
            "TR_MEMINFO": "/proc/meminfo",
        },
    )
    lines = r.stdout.splitlines()
    assert lines[0] == f"MOUNT_NFS nfs4:10.0.2.2:/export,port=2049 {tmp_path}/run/source"
    assert lines[1] == f"REMOUNT -i -o remount,ro {tmp_path}/run/source"
    assert "root filesystem ready in RAM; NFS=nfs4:10.0.2.2:/export,port=2049 unmounted" in r.stderr


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize(
    "opts,says",
    [
        ("size=1m", "the tmpfs is full: the image does not fit in 1.0M"),
        ("size=64m,nr_inodes=8", "the tmpfs ran out of inodes: the image holds more files than the 8 it allows"),
    ],
    ids=["bytes", "inodes"],
)
def test_a_full_tmpfs_is_reported_as_full_not_as_a_bad_archive(shell, tmp_path, opts, says):
    """Size unknown beforehand (gzip), so only the unpack finds out: a real tmpfs, short of
    bytes (1 MiB for a 4 MiB file) or of inodes (room for 8 files)."""
    root = make_test_rootfs(tmp_path / "root")
    (root / "blob").write_bytes(bytes(range(256)) * 16384)  # 4 MiB, compresses well
    for n in range(16):
        (root / f"small{n}").write_text("x")
    archive = pack(root, tmp_path / "root.gz", "gz")
    dest, run = tmp_path / "dest", tmp_path / "run"
    dest.mkdir(), run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(dest)], check=True)
    try:
        r = run_sh(shell, f'tr_unpack "{archive}" gzip "{dest}" ""; echo rc=$?', {"TR_RUN": str(run)})
    finally:
        subprocess.run(["umount", str(dest)], check=True)
    assert "rc=1" in r.stdout
    assert (run / "why").read_text().startswith(says)


def test_a_tmpfs_out_of_inodes_names_its_options(tmp_path, source_dir):
    """The boot's line sends the admin to rd.tmpfs.opts (nr_inodes=), not to rd.tmpfs.size:
    more bytes would not help. (The hook's own mount is stubbed here: the new root is a real
    tmpfs mounted beforehand with what rd.tmpfs.opts asks for.)"""
    newroot = tmp_path / "newroot"
    newroot.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=4", "tmpfs", str(newroot)], check=True)
    try:
        r = run_hook(
            ["dash"],
            tmp_path,
            "root=tmpfs:@DEV@ rd.tmpfs.imgfile=images/root.zst rd.tmpfs.opts=nr_inodes=4",
            source_dir,
        )
    finally:
        subprocess.run(["umount", "-l", str(newroot)], check=True)
    said = [line for line in r.stderr.splitlines() if line.startswith("tmpfs-root: ")]
    assert said and said[-1].endswith("more files than the 4 it allows (nr_inodes=) (rd.tmpfs.opts)"), r.stderr
    assert "EMERGENCY -n tmpfs-root" in r.stdout


def test_unpack_keeps_owners_modes_xattrs_acls_and_capabilities(tmp_path):
    """The flags tr_unpack gives GNU tar (the tar the initramfs carries) keep all of it."""
    root = tmp_path / "root"
    root.mkdir()
    f = root / "tool"
    f.write_text("#!/bin/sh\n")
    os.chown(f, 1234, 5678)
    f.chmod(0o4750)
    subprocess.run(["setfattr", "-n", "user.origin", "-v", "tmpfs-root", str(f)], check=True)
    subprocess.run(["setfacl", "-m", "u:4321:r", str(f)], check=True)
    subprocess.run(["setcap", "cap_net_raw+ep", str(f)], check=True)
    os.chmod(f, 0o4750)  # setcap clears setuid on some systems; the mode is part of the test
    archive = tmp_path / "meta.tar"
    subprocess.run(
        [
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--numeric-owner",
            "-C",
            str(root),
            "-cf",
            str(archive),
            ".",
        ],
        check=True,
    )
    dest, run = tmp_path / "dest", tmp_path / "run"
    dest.mkdir(), run.mkdir()
    r = run_sh(["dash"], f'tr_unpack "{archive}" tar "{dest}" ""; echo rc=$?', {"TR_RUN": str(run)})
    assert "rc=0" in r.stdout, r.stderr
    g = dest / "tool"
    st = g.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o4750)
    assert (
        'user.origin="tmpfs-root"' in subprocess.run(["getfattr", "-d", str(g)], capture_output=True, text=True).stdout
    )
    assert "user:4321:r--" in subprocess.run(["getfacl", "-p", str(g)], capture_output=True, text=True).stdout
    assert "cap_net_raw=ep" in subprocess.run(["getcap", str(g)], capture_output=True, text=True).stdout
