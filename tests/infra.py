"""Test infrastructure in one place: fake targets, disk images, loop devices, udevd,
the Debian kernel and chroot target, dracut builds and QEMU boots.

Nothing here touches this machine's /boot, bootloader or /etc: everything is
built in temporary directories or in the cache directory below, and removed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Slow artefacts (Debian target, kernel) are cached here, outside the repo.
CACHE = Path(os.environ.get("TMPFS_ROOT_TEST_CACHE", "/var/cache/tmpfs-root-tests"))
MIRROR = os.environ.get("TMPFS_ROOT_TEST_MIRROR", "http://deb.debian.org/debian")


def sh(*argv, check=True, capture=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=check, text=True, capture_output=capture, **kw)


# ------------------------------------------------------------------ the CLI
@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, env=None, user=None, timeout=120) -> CliResult:
    """Run ``python -m tui ARGS`` as a separate process, as an admin would."""
    argv = [sys.executable, "-m", "tui", *[str(a) for a in args]]
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        argv = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", *argv]
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    full_env.pop("TMPFS_ROOT_DEBUG", None)
    p = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd="/", timeout=timeout)
    return CliResult(p.returncode, p.stdout, p.stderr)


def cli_inproc(*args, env=None, timeout=60) -> CliResult:
    """``tmpfs-root ARGS`` run in this process (tui.cli.main, the very entry point), for the
    tables of cases that would otherwise start a Python per case. A call that hangs (a FIFO
    read) is stopped by an alarm after *timeout* s and fails the test."""
    import io
    import signal
    from contextlib import redirect_stderr, redirect_stdout

    from tui.cli import main

    class Hung(BaseException):
        pass

    def alarm(signum, frame):
        raise Hung(f"tmpfs-root {' '.join(map(str, args))} did not finish in {timeout} s")

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_stdin = dict(os.environ), sys.stdin
    os.environ.update(env or {})
    os.environ.pop("TMPFS_ROOT_DEBUG", None)
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        sys.stdin = io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # --help, --version
                code = int(e.code or 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.stdin = saved_stdin
        os.environ.clear()
        os.environ.update(saved_env)
    return CliResult(code, out.getvalue(), err.getvalue())


def tree_digest(root: Path) -> dict[str, str]:
    """Every file, link and directory under *root* with a digest of its content and mode."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                result[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                result[rel] = f"dir:{st.st_mode:o}"
            elif not stat.S_ISREG(st.st_mode):  # device node, fifo, socket
                result[rel] = f"{st.st_mode:o}:rdev={st.st_rdev}"
            else:
                result[rel] = f"{st.st_mode:o}:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return result


# ------------------------------------------------------------- fake targets
FAKE_KVER = "6.1.0-99-amd64"


#: What apply runs in a target besides dracut (plan checks each is there); stand-ins in a
#: fake target, which runs none of them (make_tool_target's FAKE_TOOLS do run).
GRUB_TOOLS = ("grub-mkconfig", "grub-script-check", "grub-reboot", "grub-set-default", "grub-editenv")


def make_fake_target(root: Path, kvers=(FAKE_KVER,), dracut=True, tools=True) -> Path:
    """A directory that looks like an installed Debian system to the engine: with *tools*, a
    /bin/sh and the GRUB tools apply runs (stand-ins that are never run)."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    (root / "boot/grub").mkdir(parents=True, exist_ok=True)
    (root / "boot/grub/grub.cfg").write_text("# the distro's grub.cfg\n")
    (root / "usr/lib/dracut/modules.d").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    for kver in kvers:
        (root / f"lib/modules/{kver}/kernel").mkdir(parents=True, exist_ok=True)
        (root / f"boot/vmlinuz-{kver}").write_bytes(b"kernel")
        (root / f"boot/initrd.img-{kver}").write_bytes(b"the distro's initramfs")
    names = (["dracut"] if dracut else []) + (list(GRUB_TOOLS) if tools else [])
    for name in names:
        exe = root / "usr/bin" / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    if tools:
        (root / "bin").mkdir(exist_ok=True)
        (root / "bin/sh").write_bytes(b"\x7fELF a shell stand-in")
        (root / "bin/sh").chmod(0o755)
    return root


#: Stand-ins for the target's dracut and GRUB tools in a fake target (busybox sh), so a whole
#: transaction runs in-process in a second, for the fast tier and the hostile-input table.
#: The real tools run in test_apply.py (the target's own dracut, grub-mkconfig, grub-reboot
#: on a real disk) and the boots; these only have to write what the real ones write.
FAKE_TOOLS = {
    "dracut": """#!/bin/sh
for a; do out=$a; done
echo "fake initramfs $*" > "$out"
""",
    "grub-mkconfig": """#!/bin/sh
[ "$1" = -o ] || exit 2
{
    echo "# fake grub.cfg"
    for i in /boot/initrd-tmpfs-root-*.img; do
        [ -f "$i" ] || continue
        k=${i#/boot/initrd-tmpfs-root-}; k=${k%.img}
        echo "menuentry 'x' --id 'tmpfs-root-$k' {"
        echo "}"
    done
} > "$2.new" && mv "$2.new" "$2"
""",
    "grub-script-check": "#!/bin/sh\nexit 0\n",
    "grub-probe": "#!/bin/sh\nexit 1\n",
    "grub-reboot": '#!/bin/sh\nexec grub-editenv /boot/grub/grubenv set "next_entry=$1"\n',
    "grub-set-default": '#!/bin/sh\nexec grub-editenv /boot/grub/grubenv set "saved_entry=$1"\n',
    "grub-editenv": """#!/bin/sh
f=$1; shift
case $1 in
    unset) grep -v "^$2=" "$f" > "$f.t"; mv "$f.t" "$f" ;;
    set) k=${2%%=*}; { grep -v "^$k=" "$f"; echo "$2"; } > "$f.t"; mv "$f.t" "$f" ;;
esac
""",
}


def make_tool_target(root: Path, kvers=(FAKE_KVER,)) -> Path:
    """A fake target whose tools run under chroot: static busybox as /bin/sh, and FAKE_TOOLS."""
    make_fake_target(root, kvers, tools=False)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for name in ("sh", "grep", "mv", "echo", "cat"):
        (root / "bin" / name).symlink_to("busybox")
    for name, text in FAKE_TOOLS.items():
        exe = root / "usr/bin" / name
        exe.write_text(text)
        exe.chmod(0o755)
    (root / "boot/grub/grubenv").write_text("# GRUB Environment Block\n")
    (root / "boot/grub/grub.cfg").write_text("# fake grub.cfg\n")  # as the fake grub-mkconfig makes it
    return root


# -------------------------------------------------------------- disk images
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"


@dataclass
class Part:
    size_mib: int
    fs: str | None = None  # ext4, vfat, lvm
    label: str | None = None
    uuid: str | None = None
    partlabel: str | None = None
    partuuid: str | None = None
    content: Path | None = None  # directory copied into an ext4 filesystem
    type: str = GPT_LINUX


def make_fs_image(path: Path, part: Part) -> None:
    """A filesystem image file, made without mounting anything."""
    size = f"{part.size_mib}M"
    if part.fs == "ext4":
        argv = ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0"]
        if part.label:
            argv += ["-L", part.label]
        if part.uuid:
            argv += ["-U", part.uuid]
        if part.content:
            argv += ["-d", part.content]
        sh(*argv, path, size)
    elif part.fs == "vfat":
        sh("truncate", "-s", size, path)
        argv = ["mkfs.vfat"]
        if part.label:
            argv += ["-n", part.label]
        if part.uuid:
            argv += ["-i", part.uuid.replace("-", "")]
        sh(*argv, path)
        if part.content:  # mtools writes into the image file, nothing is mounted
            sh("mcopy", "-s", "-i", path, *sorted(part.content.iterdir()), "::")
    elif part.fs in ("xfs", "btrfs"):
        sh("truncate", "-s", size, path)
        argv = [f"mkfs.{part.fs}", "-q", "-f"]
        if part.label:
            argv += ["-L", part.label]
        if part.uuid:
            argv += ["-m", f"uuid={part.uuid}"] if part.fs == "xfs" else ["-U", part.uuid]
        sh(*argv, path)
    else:
        raise ValueError(part.fs)


def make_disk_image(path: Path, parts: list[Part], workdir: Path, label: str = "gpt") -> list[int]:
    """A disk image (GPT, or "dos" for MBR) with *parts*, filesystems written with dd;
    returns each part's offset."""
    total = 2 + sum(p.size_mib for p in parts) + 2
    sh("truncate", "-s", f"{total}M", path)
    lines = [f"label: {label}", "unit: sectors"]
    offsets = []
    start = 2048
    for p in parts:
        fields = [f"start={start}", f"size={p.size_mib * 2048}", f"type={p.type}"]
        if p.partlabel:
            fields.append(f'name="{p.partlabel}"')
        if p.partuuid:
            fields.append(f"uuid={p.partuuid}")
        lines.append(", ".join(fields))
        offsets.append(start * 512)
        start += p.size_mib * 2048
    sh("sfdisk", "--quiet", path, input="\n".join(lines) + "\n")
    for i, (p, off) in enumerate(zip(parts, offsets, strict=True)):
        if p.fs in ("ext4", "vfat", "xfs", "btrfs"):
            fs = workdir / f"part{i}.img"
            make_fs_image(fs, p)
            sh("dd", f"if={fs}", f"of={path}", "bs=1M", f"seek={off // (1 << 20)}", "conv=notrunc", "status=none")
            fs.unlink()
    return offsets


@contextlib.contextmanager
def loop_device(image: Path):
    """Attach *image* to a loop device and add its partitions (this kernel has no parser).
    The partitions are deleted for sure before the device is let go: a udevd still probing
    one holds it busy, and `partx -d` then fails; the next image on the same loop device
    would find the old partition there, with the old size and the old data in its cache."""
    dev = sh("losetup", "--find", "--show", image).stdout.strip()
    try:
        _drop_partitions(dev)  # one a run before us left (the same reason)
        sh("partx", "-a", dev, check=False)
        yield dev
    finally:
        _drop_partitions(dev)
        sh("losetup", "-d", dev, check=False)


def _drop_partitions(dev: str) -> None:
    """Delete every partition of loop device *dev*, waiting out udev's probes (at most 10 s)."""
    name = Path(dev).name
    for _ in range(100):
        if not list(Path(f"/sys/block/{name}").glob(f"{name}p*")):
            return
        sh("udevadm", "settle", "--timeout=2", check=False)
        sh("partx", "-d", dev, check=False)
        time.sleep(0.1)
    raise RuntimeError(f"the partitions of {dev} stay busy: {sorted(Path(f'/sys/block/{name}').glob(f'{name}p*'))}")


UDEVD = "/lib/systemd/systemd-udevd"


def udevd_reachable() -> bool:
    """Whether a udevd serves this process's /run/udev (in its mount namespace)."""
    return sh("udevadm", "control", "--ping", "--timeout=2", check=False).returncode == 0


def start_udevd() -> bool:
    """Start a udevd unless one serves us already; returns whether this call started it."""
    if udevd_reachable():
        return False
    sh(UDEVD, "--daemon")
    for _ in range(50):
        if udevd_reachable():
            break
        time.sleep(0.1)
    return True


def stop_udevd() -> None:
    sh("udevadm", "control", "--exit", check=False)
    for _ in range(50):
        if not udevd_reachable():
            break
        time.sleep(0.1)


@contextlib.contextmanager
def udevd():
    """A udevd for the duration (the test run's own, see private_udev_session, or one started
    here), with the block devices' properties up to date."""
    started = start_udevd()
    try:
        sh("udevadm", "trigger", "--subsystem-match=block", "--action=add")
        sh("udevadm", "settle", "--timeout=30", check=False)
        yield
    finally:
        if started:
            stop_udevd()


@contextlib.contextmanager
def udevd_stopped():
    """No udevd for the duration (as in a rescue system); the run's udevd comes back after."""
    was = udevd_reachable()
    if was:
        stop_udevd()
    try:
        yield
    finally:
        if was:
            start_udevd()


def private_udev_session():
    """For a test run on a machine where no udevd runs (this project's CI): a private mount
    namespace for the run and every process it starts, with a tmpfs on /run/udev and a udevd
    of its own, so its device database is the run's alone and nothing of it outlives the
    run. Returns the function that ends it, or None when a udevd serves this machine already
    (its database is then used as it is) or when not root."""
    import ctypes

    if os.geteuid() != 0 or not Path(UDEVD).exists() or udevd_reachable():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_slave = 0x20000, 0x4000, 0x80000
    if libc.unshare(clone_newns) != 0:
        return None  # a threaded process cannot: the machine's /run/udev is used
    libc.mount(b"none", b"/", None, ms_rec | ms_slave, None)  # the machine's mounts reach us, ours stay here
    run_udev = Path("/run/udev")
    made = not run_udev.exists()
    run_udev.mkdir(mode=0o755, exist_ok=True)
    if libc.mount(b"tmpfs", b"/run/udev", b"tmpfs", 0, b"mode=0755") != 0:
        return None
    start_udevd()

    def end() -> None:
        stop_udevd()
        libc.umount2(b"/run/udev", 2)  # MNT_DETACH
        if made:
            with contextlib.suppress(OSError):
                run_udev.rmdir()

    return end


def forget_udev_db(dev: str) -> None:
    """Remove the udev database entries of *dev* and its partitions (as if no udevd ever ran)."""
    name = Path(dev).name
    for sysdir in Path("/sys/class/block").iterdir():
        if sysdir.name == name or sysdir.name.startswith(name + "p"):
            devnum = (sysdir / "dev").read_text().strip()
            with contextlib.suppress(FileNotFoundError):
                Path(f"/run/udev/data/b{devnum}").unlink()


def have(*programs: str) -> bool:
    return all(shutil.which(p) for p in programs)


# ------------------------------------------------------- the Debian target
#: A stock Debian server: the kernel with the distribution's initramfs-tools, which stays;
#: dracut-core (dracut's tools and modules, without the `dracut` package's Conflicts with
#: initramfs-tools and its kernel hooks) and dracut-network, as the README tells admins.
TARGET_PACKAGES = [
    "linux-image-amd64",
    "initramfs-tools",
    "dracut-core",
    "dracut-network",
    "systemd",
    "udev",
    "lvm2",
    "zstd",
    "pigz",
    "lz4",
    "xz-utils",
    "bzip2",
    "tar",
    "nfs-common",
    "grub-pc",
    # dracut's network handlers (NFS): network-legacy needs dhclient and arping
    "isc-dhcp-client",
    "iputils-arping",
    "dbus",
    "procps",
    "iproute2",
    "systemd-sysv",
    # dracut's url-lib (images over HTTP(S)) takes curl and the CA bundle from the target
    "curl",
    "ca-certificates",
]
TARGET_VERSION = "5"  # bump to rebuild cached targets when the recipe changes
#: Debian 13: dracut-ng 106, systemd 257, kernel versions with "+"; GRUB for UEFI (the
#: UEFI full chain boots it). It debootstraps from the same mirror, with bookworm's keyring.
TRIXIE_PACKAGES = [p for p in TARGET_PACKAGES if p not in ("grub-pc", "isc-dhcp-client")] + [
    "grub-efi-amd64-bin",
    "grub2-common",
]
SUITES = {"bookworm": TARGET_PACKAGES, "trixie": TRIXIE_PACKAGES}


def debian_target(suite: str = "bookworm") -> Path:
    """A Debian system in a directory (debootstrap + kernel, dracut, GRUB), cached: 12
    (bookworm) by default, or 13 (trixie).

    Built once into CACHE; a half-built one is never used (built aside, then renamed).
    """
    target = CACHE / f"target-{suite}-{TARGET_VERSION}"
    if (target / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        work = CACHE / f"building-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        sh(
            "debootstrap",
            "--variant=minbase",
            "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg",
            suite,
            work,
            MIRROR,
        )
        (work / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # start no services
        (work / "usr/sbin/policy-rc.d").chmod(0o755)
        from tui.host import Host

        apt_install(Host(work), SUITES[suite])
        (work / ".complete").write_text(TARGET_VERSION)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    return target


def apt_install(host, packages: list[str], update: bool = False) -> None:
    """Install Debian *packages* (no recommends) into the target of *host* with its own apt,
    then drop the downloaded archives; *update*: fetch the package lists first."""
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if update:
        host.run(["apt-get", "update", "-q"], env=env)
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env)
    host.run(["apt-get", "clean"])


def as_installed(root: Path) -> None:
    """A copy of the shared target as a system that never had tmpfs-root: other tests install
    the module (and its state) into the target; the cache's completion mark goes too."""
    (root / ".complete").unlink(missing_ok=True)
    shutil.rmtree(root / "usr/lib/dracut/modules.d/90tmpfs-root", ignore_errors=True)
    shutil.rmtree(root / "var/lib/tmpfs-root", ignore_errors=True)


def target_kernel(target: Path) -> str:
    return sorted(p.name for p in (target / "lib/modules").iterdir())[-1]


# ------------------------------------------------------------ test images
MARKER = "tmpfs-root-marker-7d1c"
TEST_INIT = """#!/bin/sh
# The test image's init: report what / is, show the marker, power off.
/bin/busybox mount -t proc proc /proc 2> /dev/null
/bin/busybox mount -t sysfs sys /sys 2> /dev/null
echo "TMPFS-ROOT-TEST: / is $(/bin/busybox awk '$2 == "/" { fs = $3 } END { print fs }' /proc/mounts)"
echo "TMPFS-ROOT-TEST: marker $(/bin/busybox cat /etc/marker)"
echo "TMPFS-ROOT-TEST: hardlink $(/bin/busybox stat -c %h /etc/marker)"
/bin/busybox poweroff -f
"""


def make_test_rootfs(root: Path) -> Path:
    """A tiny root filesystem: static busybox, an init that reports and powers off."""
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "usr/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for name in ("sh", "cat", "mount", "poweroff", "awk", "stat"):
        (root / "bin" / name).symlink_to("busybox")
    (root / "sbin/init").write_text(TEST_INIT)
    (root / "sbin/init").chmod(0o755)
    (root / "etc/marker").write_text(MARKER + "\n")
    os.link(root / "etc/marker", root / "etc/marker.link")
    (root / "etc/os-release").write_text('NAME="tmpfs-root test image"\nID=tmpfs-root-test\n')
    (root / "etc/fstab").write_text("")
    return root


COMPRESSORS = {
    "tar": None,
    "gz": ["gzip", "-c"],
    "xz": ["xz", "-c", "-T0"],
    "zst": ["zstd", "-c", "-q"],
    "bz2": ["bzip2", "-c"],
    "lz4": ["lz4", "-c", "-q"],
}


def pack(root: Path, out: Path, fmt: str) -> Path:
    """Pack *root* the way the module unpacks it (GNU tar, numeric owners, xattrs)."""
    tar = out.with_suffix(".tmp.tar")
    sh("tar", "--numeric-owner", "--xattrs", "--acls", "-C", root, "-cf", tar, ".")
    if COMPRESSORS[fmt] is None:
        tar.rename(out)
    else:
        with open(out, "wb") as f:
            subprocess.run([*COMPRESSORS[fmt], str(tar)], stdout=f, check=True)
        tar.unlink()
    return out


def make_lvm_disk(path: Path, fs_content: Path, label: str, workdir: Path, vg: str = "tvg", lv: str = "images") -> None:
    """A disk image that is an LVM PV with one LV holding ext4, made without device-mapper
    (this kernel has none): the metadata is written with activation off, the filesystem
    is written with dd at the LV's first extent."""
    sh("truncate", "-s", "96M", path)
    dev = sh("losetup", "--find", "--show", path).stdout.strip()
    try:
        pe_start = make_lv(dev, vg, lv, ["-L", "64M"], workdir)
    finally:
        sh("losetup", "-d", dev, check=False)
    fs = workdir / "lvm-fs.img"
    make_fs_image(fs, Part(64, "ext4", label=label, content=fs_content))
    sh("dd", f"if={fs}", f"of={path}", "bs=1M", f"seek={pe_start // (1 << 20)}", "conv=notrunc", "status=none")
    fs.unlink()


def make_lv(pv: str, vg: str, lv: str, size: list[str], workdir: Path) -> int:
    """Make *pv* an LVM PV with the VG *vg* and its one linear LV *lv* (lvcreate's *size*
    arguments), activating nothing (this kernel has no device-mapper); returns where the
    LV's first extent is on *pv*, in bytes. LVM's backups stay in *workdir*, out of this
    machine's /etc."""
    lvmdir = workdir / "lvm-system-dir"
    lvmdir.mkdir(exist_ok=True)
    (lvmdir / "lvm.conf").write_text("backup {\n backup = 0\n archive = 0\n}\n")
    env = dict(os.environ, LVM_SYSTEM_DIR=str(lvmdir), LVM_SUPPRESS_FD_WARNINGS="1")
    for argv in (
        ["pvcreate", "-q", "-y", pv],
        ["vgcreate", "-q", vg, pv],
        ["lvcreate", "--driverloaded", "n", "-q", "-y", "-an", "-Zn", *size, "-n", lv, vg],
    ):
        subprocess.run(argv, check=True, env=env, capture_output=True)
    out = subprocess.run(
        ["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", pv],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip())


# ------------------------------------------------------ initramfs builds
@dataclass
class Flavour:
    hostonly: bool  # the engine's default build (dracut -H --no-hostonly-cmdline)
    extra_args: list


FLAVOURS = {
    # systemd in the initramfs (Debian's default when systemd is installed), generic (-N):
    # nfs and url-lib are not named; a generic build takes them from our module's depends()
    "systemd": Flavour(False, ["--add", "lvm"]),
    # without systemd (dracut's shell init), generic. Debian's dracut-network adds ifcfg,
    # whose network handler would be systemd-networkd (the system has it) and fails without
    # systemd, failing the build; naming network-legacy makes it the handler (so with or
    # without tmpfs-root). nfs and url-lib come from our module's depends() here too.
    "nosystemd": Flavour(False, ["--omit", "systemd", "--add", "lvm network-legacy"]),
    # host-only, with the engine's default dracut arguments (--hostonly
    # --no-hostonly-cmdline). This machine's kernel has no loadable modules (no
    # /proc/modules), so dracut itself switches to non-hostonly mode here: what this
    # proves is that the engine's default command line builds an image that boots, not
    # host-only's module selection. The guest's storage drivers are named, as they must
    # be wherever the building machine's kernel has them built in.
    "hostonly": Flavour(True, ["--add-drivers", "virtio_blk virtio_pci"]),
}


#: The flavours built in the Debian 13 target (dracut-ng 106): both inits, nothing extra.
FLAVOURS_TRIXIE = {
    "systemd": Flavour(False, []),
    "nosystemd": Flavour(False, ["--omit", "systemd"]),
}


def build_test_initramfs(target: Path, flavour: str, out_dir: Path, flavours: dict | None = None) -> Path:
    """Build a generic (-N) initramfs with our module through the engine, in the target
    (install_test_module first, once)."""
    from tui import dracut
    from tui.host import Host
    from tui.plan import Plan

    spec = (flavours or FLAVOURS)[flavour]
    kver = target_kernel(target)
    host = Host(target)
    output = f"/boot/initrd-tmpfs-root-test-{flavour}.img"  # a name of ours: the host writes no other
    plan = Plan(source="LABEL=IMGVOL", image="x", hostonly=spec.hostonly)
    log = out_dir / f"dracut-{flavour}.log"
    with open(log, "w") as f:
        dracut.build_initramfs(
            host, plan, kver, output, on_line=lambda line: f.write(line + "\n"), extra_args=spec.extra_args
        )
    host.commit()
    built = out_dir / f"initrd-{flavour}.img"
    shutil.move(host.path(output), built)
    return built


def install_test_module(target: Path) -> None:
    """Install the module into the target through the engine, as apply does."""
    from tui import dracut
    from tui.host import Host

    host = Host(target)
    dracut.install_module(host)
    host.commit()


# ------------------------------------------------ the target on a real disk
SYSTEM_DISK_VERSION = "3"
SYSTEM_UUID = "7d1c0a5e-2b44-4f3a-9c1e-5a0b7e2f0001"
GRUB_DEFAULTS = """GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
"""


def new_fs_uuid(dev: str, uuid: str) -> None:
    """Give the ext4 filesystem on *dev* the UUID *uuid* (checked first, as tune2fs wants)."""
    sh("e2fsck", "-fy", dev, check=False)
    sh("tune2fs", "-U", uuid, dev)


@contextlib.contextmanager
def mounted_disk(image: Path, where: Path, part: int = 1, new_uuid: str | None = None):
    """Attach a disk image, mount its partition *part* on *where*; yields the loop device.

    With *new_uuid*, the partition's ext4 filesystem first gets that UUID, and the copy's own
    fstab and grub.cfg are changed to name it (as if installed with it).
    A udevd runs meanwhile, so /dev/disk/by-uuid exists as on a real system (grub-mkconfig
    writes root=UUID=… only when it does)."""
    where.mkdir(parents=True, exist_ok=True)
    with loop_device(image) as dev, udevd():
        if new_uuid:
            old = sh("blkid", "-o", "value", "-s", "UUID", f"{dev}p{part}").stdout.strip()
            new_fs_uuid(f"{dev}p{part}", new_uuid)
            sh("udevadm", "settle", "--timeout=30", check=False)
        sh("mount", f"{dev}p{part}", where)
        try:
            if new_uuid:
                for name in ("etc/fstab", "boot/grub/grub.cfg"):
                    f = where / name
                    if f.exists():
                        f.write_text(f.read_text().replace(old, new_uuid))
            yield dev
        finally:
            sh("umount", "-R", where, check=False)


def system_disk() -> Path:
    """A disk with the Debian target installed as a real system: MBR with one ext4 root
    partition, fstab, GRUB on a serial console installed for BIOS by
    the target's own grub-install, grub.cfg by its own grub-mkconfig. Cached."""
    disk = CACHE / f"system-disk-{TARGET_VERSION}.{SYSTEM_DISK_VERSION}.img"
    if disk.exists():
        return disk
    target = debian_target()
    import fcntl

    with open(CACHE / ".lock-disk", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if disk.exists():
            return disk
        work = CACHE / f"disk-{os.getpid()}"
        work.mkdir(exist_ok=True)
        tmp = work / "disk.img"
        # MBR: GRUB embeds its core image in the gap before the first partition
        make_disk_image(
            tmp,
            [Part(3072, fs="ext4", label="tr-system", uuid=SYSTEM_UUID, content=target, type="83")],
            work,
            label="dos",
        )
        mnt = work / "mnt"
        with mounted_disk(tmp, mnt) as dev:
            as_installed(mnt)
            (mnt / "etc/fstab").write_text(f"UUID={SYSTEM_UUID} / ext4 errors=remount-ro 0 1\n")
            (mnt / "etc/hostname").write_text("tmpfs-root-test\n")
            (mnt / "etc/default/grub").write_text(GRUB_DEFAULTS)
            from tui.host import Host

            host = Host(mnt)
            host.run(["grub-install", "--target=i386-pc", dev])
            host.run(["grub-mkconfig", "-o", "/boot/grub/grub.cfg"])
        work.joinpath("disk.img").rename(disk)
        shutil.rmtree(work, ignore_errors=True)
    return disk


def uuid_of(mountpoint: Path) -> str:
    """The UUID of the filesystem mounted at *mountpoint*."""
    return sh("findmnt", "-n", "-o", "UUID", "--mountpoint", mountpoint).stdout.strip()


#: The UEFI system disk: GPT with an EFI system partition, a separate /boot and the root.
UEFI_DISK_VERSION = "2"
UEFI_PARTS = {"esp": 1, "boot": 2, "root": 3}


UEFI_BOOT_UUID, UEFI_ESP_UUID = "7d1c0a5e-2b44-4f3a-9c1e-5a0b7e2f0b00", "7D1C-0E51"
#: GRUB modules built into BOOTX64.EFI: what it needs to find its prefix, read grub.cfg and
#: grubenv there, and boot Linux from ext4 or FAT.
GRUB_EFI_MODULES = [
    "part_gpt",
    "fat",
    "ext2",
    "search_fs_uuid",
    "normal",
    "configfile",
    "linux",
    "echo",
    "serial",
    "terminal",
    "efi_gop",
    "gzio",
    "test",
    "loadenv",
]


def grub_efi_image(host, early: str, output: str) -> None:
    """GRUB for x86_64-efi made by the target's own grub-mkimage, *early* its embedded
    config (where its prefix is), written to *output* (a path in the target)."""
    (host.root / "tmp/early.cfg").write_text(early)
    host.run(
        ["grub-mkimage", "-O", "x86_64-efi", "-o", output, "-p", "/grub", "-c", "/tmp/early.cfg", *GRUB_EFI_MODULES]
    )
    (host.root / "tmp/early.cfg").unlink()


@contextlib.contextmanager
def mounted_uefi_disk(image: Path, where: Path, new_uuid: str | None = None, esp: bool = False):
    """The UEFI disk's root on *where* and its /boot below it; yields the loop device.
    With *new_uuid*, the root filesystem gets it first (fstab and grub.cfg follow).
    *esp*: the ESP too, on /boot/efi, read-write through fusefat: this machine's kernel has
    no vfat (the guest's has)."""
    with mounted_disk(image, where, part=UEFI_PARTS["root"], new_uuid=new_uuid) as dev:
        (where / "boot").mkdir(exist_ok=True)
        sh("mount", f"{dev}p{UEFI_PARTS['boot']}", where / "boot")
        if esp:
            sh("fusefat", "-o", "rw+", f"{dev}p{UEFI_PARTS['esp']}", where / "boot/efi")
        try:
            if new_uuid:  # grub.cfg lives on /boot (or the ESP), mounted only now
                for name in ("boot/grub/grub.cfg", f"{ESP_GRUB}/grub.cfg"):
                    cfg = where / name
                    if cfg.exists():
                        cfg.write_text(cfg.read_text().replace(SYSTEM_UUID, new_uuid))
            yield dev
        finally:
            if esp:
                sh("fusermount", "-u", where / "boot/efi", check=False)


#: Where GRUB's prefix is in the ESP layout (the removable path, as the firmware finds it).
ESP_GRUB = "boot/efi/EFI/BOOT"


def grub_on_the_esp(mnt: Path) -> None:
    """Turn a mounted UEFI copy (its ESP mounted) into the other layout real hosts have: GRUB's
    prefix on the ESP, with grub.cfg and grubenv there (as with a signed GRUB whose prefix is
    EFI/<vendor>), none in /boot/grub; the kernels stay on /boot."""
    from tui.host import Host

    host = Host(mnt)
    modules = mnt / ESP_GRUB / "x86_64-efi"
    modules.mkdir()
    for mod in (mnt / "usr/lib/grub/x86_64-efi").iterdir():
        if mod.suffix in (".mod", ".lst"):  # contents only: FAT (fusefat) keeps no modes or times
            shutil.copyfile(mod, modules / mod.name)
    grub_efi_image(host, f"search.fs_uuid {UEFI_ESP_UUID} root\nset prefix=($root)/EFI/BOOT\n", "/tmp/BOOTX64.EFI")
    (mnt / ESP_GRUB / "BOOTX64.EFI").unlink()  # fusefat cannot truncate a file of many clusters
    shutil.copyfile(mnt / "tmp/BOOTX64.EFI", mnt / ESP_GRUB / "BOOTX64.EFI")
    (mnt / "tmp/BOOTX64.EFI").unlink()
    for name in ("grub.cfg", "grubenv"):
        (mnt / "boot/grub" / name).unlink()
    host.run(["grub-mkconfig", "-o", f"/{ESP_GRUB}/grub.cfg"])
    host.run(["grub-editenv", f"/{ESP_GRUB}/grubenv", "create"])


def uefi_system_disk() -> Path:
    """A Debian 13 system installed for UEFI on a GPT disk: an ESP (vfat), /boot (ext4) and
    the root (ext4), fstab by UUID, GRUB for x86_64-efi on the ESP's removable path, grub.cfg
    by the target's own grub-mkconfig on /boot, GRUB on the serial console. Cached.

    GRUB is put in place as grub-install --removable does it, step by step with the target's
    own tools, because grub-install insists on a mounted FAT ESP and this machine's kernel
    has no vfat: grub-mkimage makes BOOTX64.EFI with a prefix found by /boot's UUID, the
    modules go to /boot/grub/x86_64-efi, and mtools writes BOOTX64.EFI into the ESP."""
    disk = CACHE / f"uefi-disk-trixie-{TARGET_VERSION}.{UEFI_DISK_VERSION}.img"
    if disk.exists():
        return disk
    target = debian_target("trixie")
    import fcntl

    with open(CACHE / ".lock-disk", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if disk.exists():
            return disk
        work = CACHE / f"uefi-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        root_tree, boot_tree = work / "root", work / "boot"
        sh("cp", "-al", target, root_tree)  # hard links: nothing copied, the target stays as it is
        boot_tree.mkdir()
        for item in (root_tree / "boot").iterdir():
            item.rename(boot_tree / item.name)
        as_installed(root_tree)
        boot_uuid, esp_uuid = UEFI_BOOT_UUID, UEFI_ESP_UUID
        tmp = work / "disk.img"
        offsets = make_disk_image(
            tmp,
            [
                Part(64, "vfat", label="ESP", uuid=esp_uuid, type=GPT_ESP),
                Part(384, "ext4", label="tr-boot", uuid=boot_uuid, content=boot_tree),
                Part(3072, "ext4", label="tr-system", uuid=SYSTEM_UUID, content=root_tree),
            ],
            work,
        )
        mnt = work / "mnt"
        with mounted_uefi_disk(tmp, mnt):
            (mnt / "etc/fstab").write_text(
                f"UUID={SYSTEM_UUID} / ext4 errors=remount-ro 0 1\n"
                f"UUID={boot_uuid} /boot ext4 defaults 0 2\n"
                f"UUID={esp_uuid} /boot/efi vfat umask=0077 0 1\n"
            )
            (mnt / "etc/hostname").write_text("tmpfs-root-uefi\n")
            (mnt / "etc/default/grub").write_text(GRUB_DEFAULTS)
            from tui.host import Host

            host = Host(mnt)
            (mnt / "boot/grub").mkdir(exist_ok=True)
            shutil.copytree(
                mnt / "usr/lib/grub/x86_64-efi",
                mnt / "boot/grub/x86_64-efi",
                ignore=shutil.ignore_patterns("*.efi", "*.image", "monolithic"),
            )
            grub_efi_image(host, f"search.fs_uuid {UEFI_BOOT_UUID} root\nset prefix=($root)/grub\n", "/tmp/BOOTX64.EFI")
            host.run(["grub-mkconfig", "-o", "/boot/grub/grub.cfg"])
            host.run(["grub-editenv", "/boot/grub/grubenv", "create"])  # as grub-install does
            (mnt / "boot/efi").mkdir(exist_ok=True)  # the ESP's mount point, as the installer makes it
            esp = f"{tmp}@@{offsets[0]}"
            sh("mmd", "-i", esp, "::EFI", "::EFI/BOOT")
            sh("mcopy", "-i", esp, mnt / "tmp/BOOTX64.EFI", "::EFI/BOOT/BOOTX64.EFI")
            (mnt / "tmp/BOOTX64.EFI").unlink()
            sh("umount", mnt / "boot")
        tmp.rename(disk)
        shutil.rmtree(work, ignore_errors=True)
    return disk


#: The LVM system disk: Debian 12 with its root, /boot included, on the LV trvg/root.
LVM_DISK_VERSION = "2"
LVM_VG, LVM_LV = "trvg", "root"
LVM_ROOT_UUID = "7d1c0a5e-2b44-4f3a-9c1e-5a0b7e2f0100"  # the cached disk's; each copy gets its own
LVM_ROOT = f"/dev/mapper/{LVM_VG}-{LVM_LV}"
#: What tmpfs-root needs to run on the system itself (its engine and CLI), from Debian.
PYTHON_PACKAGES = ["python3-rich", "python3-pyudev"]


def lvm_system_disk() -> tuple[Path, int, int]:
    """Debian 12 as the guided LVM install leaves it, minus the bootloader: MBR, one partition
    that is an LVM PV, the VG trvg with the LV root (ext4) holding the whole system, /boot
    included; fstab names the LV; Python 3 with rich and pyudev from Debian, so that tmpfs-root
    runs on the system itself. Cached. Returns the image, and where the LV's filesystem is in
    it (offset and size in bytes: the LV is linear, one run of extents).

    Everything is written without device-mapper (this machine's kernel has none), the
    filesystem with dd at the LV's first extent. GRUB is not installed: grub-install and
    grub-mkconfig must probe the LV, which only a kernel with device-mapper can do, so the
    system's first boot (in the test, by QEMU's -kernel) installs it, as an installer would."""
    disk = CACHE / f"lvm-disk-{TARGET_VERSION}.{LVM_DISK_VERSION}.img"
    layout = disk.with_suffix(".json")
    if not layout.exists():
        _build_lvm_system_disk(disk, layout)
    where = json.loads(layout.read_text())
    return disk, where["offset"], where["size"]


def _build_lvm_system_disk(disk: Path, layout: Path) -> None:
    target = debian_target()
    import fcntl

    with open(CACHE / ".lock-disk", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if layout.exists():
            return
        work = CACHE / f"lvm-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        tree = work / "root"
        sh("cp", "-a", target, tree)  # a real copy: apt changes files of it in place
        as_installed(tree)
        from tui.host import Host

        apt_install(Host(tree), PYTHON_PACKAGES, update=True)
        (tree / "etc/fstab").write_text(f"{LVM_ROOT} / ext4 errors=remount-ro 0 1\n")
        (tree / "etc/hostname").write_text("tmpfs-root-lvm\n")
        (tree / "etc/default/grub").write_text(GRUB_DEFAULTS)
        size_mib = 3584
        tmp = work / "disk.img"
        [part_offset] = make_disk_image(tmp, [Part(size_mib, type="8e")], work, label="dos")
        with loop_device(tmp) as dev:
            pe_start = make_lv(f"{dev}p1", LVM_VG, LVM_LV, ["-l", "100%FREE"], work)
        # the filesystem: whole 4 MiB extents, one fewer than the PV could hold after pe_start
        # (its last one may be partial): never more than the LV (100%FREE)
        room = (size_mib << 20) - pe_start - (4 << 20)
        fs_mib = room >> 22 << 2
        fs = work / "root.img"
        make_fs_image(fs, Part(fs_mib, "ext4", label="tr-lvm-root", uuid=LVM_ROOT_UUID, content=tree))
        offset = part_offset + pe_start
        sh("dd", f"if={fs}", f"of={tmp}", "bs=1M", f"seek={offset >> 20}", "conv=notrunc,sparse", "status=none")
        tmp.rename(disk)
        layout.write_text(json.dumps({"offset": offset, "size": fs_mib << 20}))
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def mounted_lv(image: Path, offset: int, size: int, where: Path, new_uuid: str | None = None):
    """The LV's filesystem in the LVM disk *image* mounted on *where*, through a loop device
    over its bytes (the LV is linear: no device-mapper needed); with *new_uuid*, the
    filesystem gets that UUID first. Yields the loop device."""
    where.mkdir(parents=True, exist_ok=True)
    dev = sh("losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), image).stdout.strip()
    try:
        if new_uuid:
            new_fs_uuid(dev, new_uuid)
        sh("mount", dev, where)
        try:
            yield dev
        finally:
            sh("umount", where, check=False)
    finally:
        sh("losetup", "-d", dev, check=False)


@dataclass
class SystemCopy:
    image: Path  # the disk image
    mnt: Path  # its root partition, mounted
    dev: str  # the loop device
    uuid: str  # the root filesystem's UUID: this copy's own


@contextlib.contextmanager
def system_disk_copy(
    tmp_path: Path, bootable: bool = False, uuid: str | None = None, uefi: bool = False, esp: bool = False
):
    """A private copy of the system disk, mounted, with a filesystem UUID of its own (copies
    never collide with each other, with another run's, or with any disk of the machine);
    *uuid* gives it one chosen by the caller, for copies that are compared with each other
    and never attached together.
    *bootable*: GRUB is installed again for the new UUID (its core image searches for it)."""
    import uuid as uuids

    image = tmp_path / "disk.img"
    sh("cp", "--sparse=always", uefi_system_disk() if uefi else system_disk(), image)
    mnt = tmp_path / "mnt"
    fresh = uuid or str(uuids.uuid4())
    mount = functools.partial(mounted_uefi_disk, esp=esp) if uefi else mounted_disk
    with mount(image, mnt, new_uuid=fresh) as dev:
        if bootable and not uefi:  # BIOS GRUB's core image searches for the root by its UUID
            from tui.host import Host

            Host(mnt).run(["grub-install", "--target=i386-pc", dev])
        yield SystemCopy(image, mnt, dev, fresh)


# ------------------------------------------------------------- QEMU boots
@dataclass
class Boot:
    log: str
    returncode: int | None  # None: killed (at the timeout, or when *until* was seen)
    seconds: float
    reached: bool = False  # the *until* text appeared on the console

    def lines(self, prefix: str) -> list[str]:
        return [line.strip() for line in self.log.splitlines() if prefix in line]


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def ovmf_vars(tmp: Path) -> Path:
    """A machine's own UEFI variable store (a copy of OVMF's empty one)."""
    vars_copy = tmp / "OVMF_VARS.fd"
    shutil.copy(OVMF_VARS, vars_copy)
    return vars_copy


def qemu_boot(
    kernel: Path | None,
    initrd: Path | None,
    append: str,
    disks: list[Path],
    log: Path,
    timeout: float = 300,
    memory: str = "768M",
    network: bool = False,
    until: str | None = None,
    snapshot: bool = True,
    uefi: Path | None = None,
    cpus: int = 1,
) -> Boot:
    """Boot under QEMU TCG (KVM hangs on this machine), serial console to *log*.

    With *network*, the guest gets QEMU's user network: 10.0.2.2 is this machine's
    loopback, where nfs_server listens. With *until*, the VM is stopped as soon as that
    text appears on the console (an emergency shell waits for input forever). Without
    *kernel*, the machine boots from its first disk (SeaBIOS, then whatever is installed
    there); without *snapshot*, what the guest writes stays on the disk image. With *uefi*
    (a copy of OVMF's variables, see ovmf_vars), the firmware is OVMF instead of SeaBIOS.
    *cpus* > 1 lets TCG run the guest's threads on this machine's cores (work in the guest,
    such as a dracut build).
    """
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        memory,
        "-smp",
        str(cpus),
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{log}",
        "-no-reboot",
        "-nic",
        "user,model=virtio-net-pci" if network else "none",
    ]
    if uefi is not None:
        argv += [
            "-drive",
            f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,file={uefi}",
        ]
    if kernel is not None:
        argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", f"console=ttyS0 {append}"]
    for disk in disks:
        argv += ["-drive", f"file={disk},format=raw,if=virtio,snapshot={'on' if snapshot else 'off'}"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reached = False
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(1)
        if until and log.exists() and until in log.read_text(errors="replace"):
            reached = True
            break
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    rc = None if reached or proc.returncode < 0 else proc.returncode
    text = log.read_text(errors="replace") if log.exists() else ""
    return Boot(text, rc, time.monotonic() - t0, reached)


# ------------------------------------------------------------- NFS server
GANESHA_CONF = """
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "{state}";
}}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = /export;
    Access_Type = RO;
    Squash = No_Root_Squash;
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def nfs_server(export: Path, workdir: Path):
    """A userspace NFSv4 server (nfs-ganesha) exporting *export* read-only as /export,
    on a free port of this machine's loopback only; yields the port."""
    import socket

    port = free_port()
    state = workdir / "ganesha-state"
    state.mkdir(parents=True, exist_ok=True)
    conf = workdir / "ganesha.conf"
    conf.write_text(GANESHA_CONF.format(port=port, state=state, export=export))
    proc = subprocess.Popen(
        [
            "ganesha.nfsd",
            "-F",
            "-f",
            conf,
            "-L",
            workdir / "ganesha.log",
            "-p",
            workdir / "ganesha.pid",
            "-N",
            "NIV_EVENT",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError("ganesha.nfsd exited: " + (workdir / "ganesha.log").read_text()[-2000:])
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
