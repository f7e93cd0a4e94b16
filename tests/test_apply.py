"""apply / status / remove on a real Debian 12 system on a real disk (loop device), with
the target's own dracut, grub-mkconfig, grub-script-check and grub-reboot run in a
chroot; faults injected into the target (a broken dracut config, a failing grub.d
script, a full /boot) and SIGKILL at every step.

The target's dracut is configured (in the test copy only) to build a small,
uncompressed image: these tests check the transaction, not the image, which
test_full_chain.py and test_boot_qemu.py boot."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.infra import REPO, run_cli, sh, system_disk_copy, target_kernel, tree_digest, uuid_of
from tui.bootloader import parse_bls, parse_grubenv
from tui.host import Host

pytestmark = [pytest.mark.chroot]

SMALL_DRACUT = 'dracutmodules="base tmpfs-root"\ncompress="cat"\n'


def plan(mnt: Path) -> list[str]:
    """The plan's options: the image on the copy's own root filesystem (each copy has its UUID)."""
    return ["--source", f"UUID={uuid_of(mnt)}", "--image", "images/root.tar", "--no-hostonly"]


#: What differs between two correct applies: build timestamps inside the image and its checksum.
VOLATILE = re.compile(r"^(boot/initrd-tmpfs-root-.*|etc/tmpfs-root/state\.json|var/lib/tmpfs-root(/.*)?)$")


def prepare(mnt: Path) -> Path:
    """The target's dracut set to build small images; a small image on the disk."""
    (mnt / "etc/dracut.conf.d/50-test-small.conf").write_text(SMALL_DRACUT)
    (mnt / "images").mkdir()
    sh("tar", "-C", mnt / "etc", "-cf", mnt / "images/root.tar", "hostname")
    return mnt


@pytest.fixture
def system(tmp_path):
    """A private copy of the installed Debian disk, mounted, with a small image on it."""
    with system_disk_copy(tmp_path) as copy:
        yield prepare(copy.mnt)


def apply(mnt: Path, *extra: str):
    return run_cli("apply", "--root", mnt, *plan(mnt), *extra, "--yes", timeout=600)


def entries(cfg: str) -> dict[str, str]:
    """menuentry id -> body, from a grub.cfg."""
    return {
        m.group(2): m.group(3)
        for m in re.finditer(r"^menuentry '([^']*)'[^{]*--id '([^']+)' \{\n(.*?)^\}", cfg, re.M | re.S)
    }


def in_target(root: Path, *argv: str) -> str:
    """Run a command inside the target, as the tool does (chroot with /proc, /sys, /dev)."""
    return Host(root).run(list(argv)).output


def digest_diff(a: dict, b: dict, ignore=None) -> list[str]:
    keys = {k for k in a.keys() | b.keys() if not (ignore and ignore.match(k))}
    return sorted(k for k in keys if a.get(k) != b.get(k))


def test_apply_status_then_remove_leaves_every_other_file_as_it_was(system):
    kver = target_kernel(system)
    before = tree_digest(system)
    r = apply(system)
    assert r.returncode == 0, r.stderr
    cfg = (system / "boot/grub/grub.cfg").read_text()
    ours = entries(cfg)[f"tmpfs-root-{kver}"]
    linux = re.search(r"^\s*linux\s+(\S+)\s+(.*)$", ours, re.M)
    assert linux.group(1) == f"/boot/vmlinuz-{kver}"
    assert f"root=tmpfs:UUID={uuid_of(system)} rd.tmpfs.imgfile=images/root.tar" in linux.group(2)
    assert "rd.emergency=reboot" in linux.group(2)  # boot once: a failure falls back
    assert re.search(rf"^\s*initrd\s+/boot/initrd-tmpfs-root-{kver}\.img$", ours, re.M)
    assert (system / f"boot/initrd-tmpfs-root-{kver}.img").stat().st_size > 1 << 20
    assert len([k for k in entries(cfg) if k.startswith("tmpfs-root-")]) == 1
    in_target(system, "grub-script-check", "/boot/grub/grub.cfg")  # raises if it fails
    assert parse_grubenv((system / "boot/grub/grubenv").read_text())["next_entry"] == f"tmpfs-root-{kver}"
    # the distro's own initramfs and entries are untouched
    assert tree_digest(system / "boot")[f"initrd.img-{kver}"] == before[f"boot/initrd.img-{kver}"]
    assert f"/boot/initrd.img-{kver}" in cfg

    st = run_cli("status", "--root", system, "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    report = json.loads(st.stdout)
    assert report["installed"] and report["problems"] == [] and report["boot_once_pending"]
    assert [k["kver"] for k in report["kernels"]] == [kver] and report["kernels"][0]["entry"]

    applied = tree_digest(system)
    again = apply(system)
    assert again.returncode == 0 and "nothing to change" in again.stdout
    assert digest_diff(applied, tree_digest(system)) == []

    gone = run_cli("remove", "--root", system, "--yes", timeout=300)
    assert gone.returncode == 0, gone.stderr
    assert (diff := digest_diff(before, tree_digest(system))) == [], diff
    assert "not installed" in run_cli("status", "--root", system).stdout


def test_a_changed_plan_updates_in_place(system):
    kver = target_kernel(system)
    assert apply(system).returncode == 0
    r = apply(system, "--size", "1G", "--boot", "menu")
    assert r.returncode == 0, r.stderr
    assert "[2/7] build the initramfs" in r.stderr and "unchanged" in r.stderr.split("[2/7]")[1].split("[3/7]")[0]
    cfg = (system / "boot/grub/grub.cfg").read_text()
    ids = [k for k in entries(cfg) if k.startswith("tmpfs-root-")]
    assert ids == [f"tmpfs-root-{kver}"]
    body = entries(cfg)[ids[0]]
    assert "rd.tmpfs.size=1G" in body and "rd.emergency=reboot" not in body
    assert "next_entry" not in parse_grubenv((system / "boot/grub/grubenv").read_text())
    assert run_cli("status", "--root", system).returncode == 0


def _broken_dracut(mnt: Path):
    (mnt / "etc/dracut.conf.d/99-broken.conf").write_text('add_dracutmodules+=" no-such-module "\n')
    return "build the initramfs", lambda: (mnt / "etc/dracut.conf.d/99-broken.conf").unlink()


def _broken_grub_script(mnt: Path):
    script = mnt / "etc/grub.d/41_broken"
    script.write_text("#!/bin/sh\necho 'a third-party script fails' >&2\nexit 1\n")
    script.chmod(0o755)
    return "regenerate the GRUB configuration", script.unlink


def _full_boot(mnt: Path):
    used = int(sh("du", "-sm", mnt / "boot").stdout.split()[0])
    saved = mnt.parent / "boot-saved"
    sh("cp", "-a", mnt / "boot", saved)
    sh("mount", "-t", "tmpfs", "-o", f"size={used + 8}m", "tmpfs", mnt / "boot")
    sh("cp", "-a", f"{saved}/.", mnt / "boot")

    def undo():
        sh("umount", mnt / "boot")

    return "build the initramfs", undo


@pytest.mark.parametrize(
    "fault", [_broken_dracut, _broken_grub_script, _full_boot], ids=["dracut-fails", "grub-mkconfig-fails", "boot-full"]
)
def test_a_failing_step_rolls_everything_back_and_a_rerun_converges(system, fault):
    step, undo = fault(system)
    before = tree_digest(system)
    r = apply(system)
    assert r.returncode == 1
    assert f"step '{step}" in r.stderr and "rolled back" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) < 400  # one line, not a traceback
    assert "Traceback" not in r.stderr
    assert (diff := digest_diff(before, tree_digest(system))) == [], diff
    undo()
    again = apply(system)
    assert again.returncode == 0, again.stderr
    assert run_cli("status", "--root", system).returncode == 0


#: The reference copy and the copies compared with it share one UUID (drawn for this run:
#: files such as fstab name it); they are attached one after the other, never together.
REFERENCE_UUID = str(uuid.uuid4())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tree after one uninterrupted apply, for comparison."""
    tmp = tmp_path_factory.mktemp("reference")
    with system_disk_copy(tmp, uuid=REFERENCE_UUID) as copy:
        prepare(copy.mnt)
        before = tree_digest(copy.mnt)
        assert apply(copy.mnt).returncode == 0
        return before, tree_digest(copy.mnt)


@pytest.fixture
def system_like_reference(tmp_path, reference):
    """A copy to compare with the reference: the same UUID (after the reference is detached)."""
    with system_disk_copy(tmp_path, uuid=REFERENCE_UUID) as copy:
        yield prepare(copy.mnt)


def boot_files(mnt: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(mnt / "boot").items() if not k.startswith("initrd-tmpfs-root-")}


#: Killed while building the initramfs and while regenerating grub.cfg (2 of the 7 steps:
#: the others journal their files the same way, and two keep the whole CI run under its time).
@pytest.mark.parametrize("step", [2, 5])
def test_sigkill_at_any_step_leaves_a_bootable_target_and_a_rerun_converges(system_like_reference, reference, step):
    system = system_like_reference
    before, applied = reference
    kver = target_kernel(system)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui", "apply", "--root", str(system), *plan(system), "--yes"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"[{step}/7]"):
            if step == 2:
                time.sleep(1.0)  # dracut is running
            proc.kill()
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    for _ in range(30):  # the command it ran dies with it (SIGINT by PR_SET_PDEATHSIG)
        if sh("pgrep", "-f", "dracut --force --kver", check=False).returncode != 0:
            break
        time.sleep(1)
    else:
        pytest.fail("dracut outlived the killed apply")
    assert not list((system / "var/tmp").glob("dracut.*"))  # and cleaned up after itself

    # What GRUB would boot now: the old configuration, or the new one whose every file is complete
    cfg = (system / "boot/grub/grub.cfg").read_text()
    if f"tmpfs-root-{kver}" in cfg:
        assert (system / f"boot/initrd-tmpfs-root-{kver}.img").stat().st_size > 1 << 20
        in_target(system, "grub-script-check", "/boot/grub/grub.cfg")
    else:
        old = {k: v for k, v in before.items() if k.startswith("boot/") and "initrd-tmpfs-root" not in k}
        assert {f"boot/{k}": v for k, v in boot_files(system).items() if f"boot/{k}" in old} == old
    assert not list((system / "boot").glob("*.new"))[1:]  # at most dracut's own, removed by the rerun

    again = apply(system)
    assert again.returncode == 0, again.stderr
    assert run_cli("status", "--root", system).returncode == 0
    assert digest_diff(applied, tree_digest(system), ignore=VOLATILE) == []


def test_kernel_hooks_follow_kernel_installs_and_removals(system):
    kver = target_kernel(system)
    assert apply(system).returncode == 0
    ours = system / f"boot/initrd-tmpfs-root-{kver}.img"
    args = [f"--arg={kver}", f"--arg=/boot/vmlinuz-{kver}"]
    in_target(system, "run-parts", "--report", "--exit-on-error", *args, "/etc/kernel/postrm.d")
    assert not ours.exists()
    assert f"tmpfs-root-{kver}" not in (system / "boot/grub/grub.cfg").read_text()  # zz-update-grub ran
    in_target(system, "run-parts", "--report", "--exit-on-error", *args, "/etc/kernel/postinst.d")
    assert ours.exists()
    listing = in_target(system, "lsinitrd", f"/boot/initrd-tmpfs-root-{kver}.img")
    assert "tmpfs-root.sh" in listing  # built with our module, from the plan's options
    assert f"'tmpfs-root-{kver}'" in (system / "boot/grub/grub.cfg").read_text()


def test_bls_target_gets_an_entry_file_of_its_own(system):
    """A target laid out as RHEL does: /boot/grub2, /boot/loader/entries, GRUB_ENABLE_BLSCFG."""
    kver = target_kernel(system)
    sh("mv", system / "boot/grub", system / "boot/grub2")
    entries_dir = system / "boot/loader/entries"
    entries_dir.mkdir(parents=True)
    distro = entries_dir / f"0123456789abcdef-{kver}.conf"
    distro.write_text(
        f"title Distro ({kver})\nversion {kver}\nlinux /boot/vmlinuz-{kver}\n"
        f"initrd /boot/initrd.img-{kver}\noptions root=UUID={uuid_of(system)} ro\n"
    )
    with open(system / "etc/default/grub", "a") as f:
        f.write("GRUB_ENABLE_BLSCFG=true\n")
    before = tree_digest(system)
    r = apply(system, "--boot", "menu")
    assert r.returncode == 0, r.stderr
    assert "grub-mkconfig" not in r.stdout  # BLS: nothing to regenerate
    ours = entries_dir / f"tmpfs-root-{kver}.conf"
    entry = parse_bls(ours.read_text())
    assert (system / entry["linux"].lstrip("/")).is_file()
    assert (system / entry["initrd"].lstrip("/")).is_file()
    # the admin's GRUB_CMDLINE_LINUX (tests/infra.GRUB_DEFAULTS) first, then ours
    assert entry["options"].startswith(
        f"console=ttyS0 root=tmpfs:UUID={uuid_of(system)} rd.tmpfs.imgfile=images/root.tar"
    )
    assert entry["version"] == kver
    assert (
        digest_diff(
            before,
            tree_digest(system),
            ignore=re.compile(
                r"^(boot/initrd-tmpfs-root-.*|boot/loader/entries/tmpfs-root-.*|"
                r"etc/tmpfs-root.*|var/lib/tmpfs-root.*|usr/lib/dracut/modules.d.*|"
                r"etc/kernel/install.d.*)$"
            ),
        )
        == []
    )
    assert (system / "etc/kernel/install.d/90-tmpfs-root.install").exists()
    assert not (system / "etc/kernel/postinst.d/z50-tmpfs-root").exists()
    # the kernel-install plugin writes the very same entry for a (re)installed kernel
    python_entry = ours.read_text()
    ours.unlink()
    in_target(
        system,
        "/etc/kernel/install.d/90-tmpfs-root.install",
        "add",
        kver,
        "/boot/loader/entries",
        f"/boot/vmlinuz-{kver}",
    )
    assert ours.read_text() == python_entry
    assert run_cli("remove", "--root", system, "--yes").returncode == 0
    assert (diff := digest_diff(before, tree_digest(system))) == [], diff


def test_default_mode_sets_the_saved_default_and_remove_restores_it(system):
    kver = target_kernel(system)
    before = tree_digest(system)
    r = apply(system, "--boot", "default")
    assert r.returncode == 0, r.stderr
    assert (system / "etc/default/grub.d/tmpfs-root.cfg").read_text().endswith("GRUB_DEFAULT=saved\n")
    cfg = (system / "boot/grub/grub.cfg").read_text()
    assert 'set default="${saved_entry}"' in cfg  # grub-mkconfig read the drop-in
    env = parse_grubenv((system / "boot/grub/grubenv").read_text())
    assert env["saved_entry"] == f"tmpfs-root-{kver}" and "next_entry" not in env
    assert "rd.emergency=reboot" not in entries(cfg)[f"tmpfs-root-{kver}"]  # no reboot loop
    report = json.loads(run_cli("status", "--root", system, "--json").stdout)
    assert report["default_is_ours"] and report["problems"] == []
    assert run_cli("remove", "--root", system, "--yes").returncode == 0
    assert (diff := digest_diff(before, tree_digest(system))) == [], diff


def test_status_reports_drift(system):
    kver = target_kernel(system)
    assert apply(system).returncode == 0
    os.utime(system / f"boot/vmlinuz-{kver}")  # a kernel reinstalled after the build
    with open(system / "etc/tmpfs-root/grub.env", "a") as f:
        f.write("# edited by hand\n")
    st = run_cli("status", "--root", system)
    assert st.returncode == 1
    assert "older than its kernel" in st.stderr and "/etc/tmpfs-root/grub.env is modified" in st.stderr
    again = apply(system)  # and apply repairs both
    assert again.returncode == 0 and run_cli("status", "--root", system).returncode == 0


def test_a_second_kernel_package_runs_initramfs_tools_and_our_hook_and_its_purge_removes_ours(system):
    """A stock Debian host keeps initramfs-tools (the target has dracut-core, never the
    `dracut` package, which would replace it). Installing another kernel package, as apt does
    on an update, runs both kernel hooks: initramfs-tools makes the distribution's
    initrd.img-KVER, ours makes initrd-tmpfs-root-KVER.img, and zz-update-grub lists both
    entries; purging the package removes ours with it. The first kernel's distribution
    initramfs stays byte for byte as it was throughout."""
    kver = target_kernel(system)
    distro_initrd = system / f"boot/initrd.img-{kver}"
    before = distro_initrd.read_bytes()
    assert in_target(system, "dpkg-query", "-W", "-f=${Status}", "initramfs-tools") == "install ok installed"
    assert apply(system).returncode == 0
    host = Host(system)
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    host.run(["apt-get", "update", "-q"], env=env)
    # the cloud flavour: another kernel package of the same release, a different version string
    host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "linux-image-cloud-amd64"], env=env)
    second = [k for k in (p.name for p in (system / "lib/modules").iterdir()) if k != kver]
    assert len(second) == 1 and second[0].endswith("-cloud-amd64"), second
    new = second[0]
    assert (system / f"boot/initrd.img-{new}").stat().st_size > 1 << 20  # initramfs-tools' hook
    assert (system / f"boot/initrd-tmpfs-root-{new}.img").stat().st_size > 1 << 20  # ours
    cfg = (system / "boot/grub/grub.cfg").read_text()
    ids = entries(cfg)
    assert f"tmpfs-root-{new}" in ids and f"tmpfs-root-{kver}" in ids, list(ids)
    assert f"/boot/initrd.img-{new}" in cfg and f"/boot/initrd.img-{kver}" in cfg  # the distribution's entries
    assert distro_initrd.read_bytes() == before
    host.run(["apt-get", "purge", "-y", "-q", "linux-image-cloud-amd64", f"linux-image-{new}"], env=env)
    assert not (system / f"boot/initrd-tmpfs-root-{new}.img").exists()
    assert f"tmpfs-root-{new}" not in (system / "boot/grub/grub.cfg").read_text()
    assert (system / f"boot/initrd-tmpfs-root-{kver}.img").exists()
    assert distro_initrd.read_bytes() == before
    assert run_cli("remove", "--root", system, "--yes").returncode == 0
    assert distro_initrd.read_bytes() == before
