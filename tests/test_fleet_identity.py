"""A fleet image gives every node its own identity: ``image create --generic`` leaves out of
the image (never out of the tree) what must differ from host to host and packs an empty
/etc/machine-id, in every format; without it the image holds them all. At boot, the
module's pre-pivot hook writes, only for a root=tmpfs: boot of a systemd root, the unit
that has the booted system make its own SSH host keys before sshd, and runs nothing of the
image."""

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.infra import run_cli
from tests.test_module_shell import SHELLS, run_sh
from tui.dracut import MODULE_SOURCE
from tui.image_create import PER_HOST, make_plan

HOOK = MODULE_SOURCE / "tmpfs-root-identity.sh"
UNIT = "tmpfs-root-host-keys.service"
MACHINE_ID = "0123456789abcdef0123456789abcdef\n"
#: What --generic leaves out of the tree below, and what it keeps beside them.
PER_HOST_FILES = (
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_rsa_key.pub",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "var/lib/dhcp/dhclient.eth0.leases",
    "var/lib/dbus/machine-id",
)
KEPT = ("etc/ssh/sshd_config", "etc/ssh/moduli", "var/lib/systemd/timers/stamp", "etc/hostname", "etc/fstab")
KEPT_DIRS = ("etc/ssh", "var/lib/dhcp", "var/lib/systemd", "var/lib/dbus")


def fleet_tree(root: Path, dbus_link: str | None = None) -> Path:
    """A root holding a host's identity; /var/lib/dbus/machine-id a copy, or a link to *dbus_link*."""
    for rel in (*PER_HOST_FILES, *KEPT):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == "var/lib/dbus/machine-id" and dbus_link:
            continue
        (root / rel).write_text(MACHINE_ID if "machine-id" in rel else f"{rel} of this host\n")
    (root / "etc/fstab").write_text("UUID=1111 / ext4 defaults 0 1\n")
    (root / "etc/machine-id").write_text(MACHINE_ID)
    (root / "etc/machine-id").chmod(0o444)
    if dbus_link:
        (root / "var/lib/dbus/machine-id").symlink_to(dbus_link)
    return root


def tar_stream(image: Path) -> bytes:
    """The image's tar: every part of a sharded image, one after the other, or the one stream."""
    unpack = {".zst": ["zstd", "-dc"], ".gz": ["gzip", "-dc"]}.get(image.suffix, ["cat"])
    return subprocess.run([*unpack, str(image)], capture_output=True, check=True).stdout


def members(image: Path) -> list[tuple[str, str, int, str]]:
    """(name without ./, mode, size, link target) of each member, as GNU tar lists them: every
    shard of a sharded image, or the one stream."""
    data = tar_stream(image)
    out = subprocess.run(
        ["tar", "-tv", "--ignore-zeros", "--numeric-owner", "--quoting-style=literal"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout.decode()
    found = []
    for line in out.splitlines():
        perms, _, size, _, _, rest = line.split(None, 5)
        name, _, link = rest.partition(" -> ")
        found.append((name.removeprefix("./").rstrip("/") or ".", perms, int(size), link))
    return found


def unpacked_file(image: Path, name: str) -> bytes:
    """The content of member *name* (stored as name or ./name)."""
    with tarfile.open(fileobj=io.BytesIO(tar_stream(image)), ignore_zeros=True) as t:
        found = [m for m in t.getmembers() if m.name.removeprefix("./") == name]
        assert len(found) == 1, found
        f = t.extractfile(found[0])
        assert f is not None
        return f.read()


FORMATS = [([], "root.tar.zst"), (["--shards=1"], "root.tar.zst"), (["--format=gz"], "root.tar.gz")]
FORMAT_IDS = ["sharded-default", "one-zstd-stream", "gz"]


@pytest.mark.parametrize("args,name", FORMATS, ids=FORMAT_IDS)
def test_generic_leaves_out_what_differs_per_host_and_empties_the_machine_id(tmp_path, args, name):
    tree = fleet_tree(tmp_path / "tree")
    image = tmp_path / name
    made = run_cli("image", "create", f"--from={tree}", f"--output={image}", "--generic", *args)
    assert made.returncode == 0, made.stderr
    listed = members(image)
    names = [m[0] for m in listed]
    for gone in PER_HOST_FILES:
        assert gone not in names, gone
    for kept in (*KEPT, *KEPT_DIRS):
        assert kept in names, kept
    # /etc/machine-id: once, an empty regular file, read-only (systemd makes one at each boot)
    ids = [m for m in listed if m[0] == "etc/machine-id"]
    assert [(perms, size) for _, perms, size, _ in ids] == [("-r--r--r--", 0)], ids
    assert unpacked_file(image, "etc/machine-id") == b""
    assert names.count("etc/fstab") == 1 and b"#UUID=1111 /" in unpacked_file(image, "etc/fstab")
    # the tree is not changed
    assert (tree / "etc/machine-id").read_text() == MACHINE_ID
    assert all((tree / rel).exists() for rel in PER_HOST_FILES)


@pytest.mark.parametrize("args,name", FORMATS, ids=FORMAT_IDS)
def test_without_generic_the_image_holds_the_hosts_identity(tmp_path, args, name):
    tree = fleet_tree(tmp_path / "tree")
    image = tmp_path / name
    made = run_cli("image", "create", f"--from={tree}", f"--output={image}", *args)
    assert made.returncode == 0, made.stderr
    names = [m[0] for m in members(image)]
    for held in (*PER_HOST_FILES, *KEPT, "etc/machine-id"):
        assert held in names, held
    assert unpacked_file(image, "etc/machine-id").decode() == MACHINE_ID
    assert unpacked_file(image, "etc/ssh/ssh_host_ed25519_key") == b"etc/ssh/ssh_host_ed25519_key of this host\n"


@pytest.mark.parametrize("link", ["/etc/machine-id", "../../../etc/machine-id"])
def test_a_dbus_machine_id_linked_to_etc_is_kept(tmp_path, link):
    tree = fleet_tree(tmp_path / "tree", dbus_link=link)
    image = tmp_path / "root.tar"
    made = run_cli("image", "create", f"--from={tree}", f"--output={image}", "--format=tar", "--generic")
    assert made.returncode == 0, made.stderr
    assert ("var/lib/dbus/machine-id", link) in [(m[0], m[3]) for m in members(image)]


def test_dry_run_names_what_generic_leaves_out(tmp_path):
    tree = fleet_tree(tmp_path / "tree")
    r = run_cli("image", "create", f"--from={tree}", f"--output={tmp_path / 'r.tar.zst'}", "--generic", "--dry-run")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "--generic" in x)
    assert "/etc/machine-id packed empty" in line
    for gone in PER_HOST_FILES:
        assert f"/{gone}" in line, gone
    assert "sshd_config" not in line
    assert not list(tmp_path.glob("r.tar.zst*"))
    plain = run_cli("image", "create", f"--from={tree}", f"--output={tmp_path / 'r.tar.zst'}", "--dry-run")
    assert "--generic" not in plain.stdout


def test_generic_is_documented_item_by_item():
    r = run_cli("image", "create", "--help")
    text = " ".join(r.stdout.split())
    assert "--generic" in text
    for pattern, why in PER_HOST:
        assert pattern[1:] in text and " ".join(why.split()) in text, pattern


def test_plan_field_and_a_sharded_tree_without_fstab(tmp_path):
    """make_plan(generic=True) is --generic; a sharded image packs its staged files (the empty
    machine ID, with the fstab when there is one) in its first shard, with their directories,
    and its index counts them."""
    import os

    from tui import image_index
    from tui.image_create import create

    tree = fleet_tree(tmp_path / "tree")
    plan = make_plan(str(tree), str(tmp_path / "r.tar.zst"), generic=True, mountinfo="")
    assert plan.generic and "./etc/ssh/ssh_host_*key" in plan.excludes
    assert [name for name, _, _ in plan.staged()] == ["etc/fstab", "etc/machine-id"]
    assert not make_plan(str(tree), str(tmp_path / "r.tar.zst"), mountinfo="").generic
    (tree / "etc/fstab").unlink()
    plan = make_plan(str(tree), str(tmp_path / "r.tar.zst"), generic=True, mountinfo="")
    assert [name for name, _, _ in plan.staged()] == ["etc/machine-id"]
    made = create(plan)
    listed = members(Path(made.path))
    names = [m[0] for m in listed]
    assert names.count("etc/machine-id") == 1 and "etc/fstab" not in names
    fd = os.open(made.path, os.O_RDONLY)
    try:
        index = image_index.read(fd)
    finally:
        os.close(fd)
    # every member of every part, the staged machine ID included, counted by the index
    assert sum(p.entries for p in index.parts) == len(listed)


# ------------------------------------------------------------------ the boot's hook
def run_hook(shell, tmp_path: Path, cmdline: str = "root=tmpfs:LABEL=IMAGES", systemd: bool = True):
    """The pre-pivot hook as dracut runs it (sourced, its functions stubbed) on a new root
    that holds an ssh-keygen and a chroot of its own, which must not run."""
    newroot = tmp_path / "newroot"
    (newroot / "usr/bin").mkdir(parents=True, exist_ok=True)
    (newroot / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "ran-from-the-image"
    for tool in ("ssh-keygen", "chroot"):
        (newroot / "usr/bin" / tool).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (newroot / "usr/bin" / tool).chmod(0o755)
    if systemd:
        (newroot / "usr/lib/systemd/systemd").write_text("")
    run = tmp_path / "run/systemd/system"
    stub = f'chroot() {{ touch "{marker}"; }}\n'
    r = run_sh(
        shell,
        stub + f". {HOOK}",
        {"CMDLINE": cmdline, "NEWROOT": str(newroot), "TR_SYSTEMD_RUN": str(run), "TR_RUN": str(tmp_path / "tr")},
    )
    assert r.returncode == 0, r.stderr
    assert not marker.exists()  # nothing of the image ran
    return r, run


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_the_hook_writes_the_host_keys_unit_and_its_wants_links(shell, tmp_path):
    r, run = run_hook(shell, tmp_path)
    unit = (run / UNIT).read_text()
    lines = unit.splitlines()
    for line in (
        "ConditionPathExists=!/etc/initrd-release",
        "ConditionPathExists=/etc/ssh/sshd_config",
        "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key",
        "Before=ssh.service sshd.service",
        "ExecStart=ssh-keygen -A",
        "Type=oneshot",
    ):
        assert line in lines, line
    assert stat.S_IMODE((run / UNIT).stat().st_mode) == 0o644
    for wanted_by in ("ssh.service", "sshd.service"):
        link = run / f"{wanted_by}.wants" / UNIT
        assert os.readlink(link) == f"../{UNIT}"
        assert link.resolve() == (run / UNIT).resolve()
    # written under temporary names, renamed: none is left
    assert sorted(p.name for p in run.rglob(".*")) == []
    # run again (a second pre-pivot, an emergency shell's retry): the same, nothing else
    before = {p: (p.is_symlink(), p.read_bytes() if p.is_file() else None) for p in run.rglob("*")}
    run_hook(shell, tmp_path)
    assert {p: (p.is_symlink(), p.read_bytes() if p.is_file() else None) for p in run.rglob("*")} == before


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
@pytest.mark.parametrize(
    "cmdline,systemd",
    [("root=UUID=1234", True), ("root=/dev/sda2", True), ("", True), ("root=tmpfs:LABEL=IMAGES", False)],
    ids=["uuid-root", "device-root", "no-root", "no-systemd-in-the-image"],
)
def test_the_hook_writes_nothing_unless_a_tmpfs_root_boots_systemd(shell, tmp_path, cmdline, systemd):
    r, run = run_hook(shell, tmp_path, cmdline, systemd)
    assert not run.exists() and not (tmp_path / "run").exists(), r.stdout
    assert r.stderr == ""


@pytest.mark.parametrize("shell", SHELLS, ids=["dash", "busybox"])
def test_the_hook_says_so_when_it_cannot_write(shell, tmp_path):
    (tmp_path / "run").write_text("")  # a file where the directory would go
    r, _ = run_hook(shell, tmp_path)
    assert f"warning: could not write {UNIT}" in r.stderr


def test_the_module_installs_the_hook_before_switch_root():
    lines = [line.strip() for line in (MODULE_SOURCE / "module-setup.sh").read_text().splitlines()]
    assert 'inst_hook pre-pivot 91 "$moddir/tmpfs-root-identity.sh"' in lines


@pytest.mark.needs("systemd-analyze", "ssh-keygen")  # verify looks for the command ExecStart runs
def test_systemd_accepts_the_unit(tmp_path):
    _, run = run_hook(["dash"], tmp_path)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(run / UNIT)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and UNIT not in r.stderr, r.stderr
