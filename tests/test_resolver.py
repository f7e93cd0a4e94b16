"""The resolver: target paths resolve inside the root as if chrooted, never out of it; no
link is followed in tmpfs-root's own directories; non-regular files are refused without
blocking. Each test runs twice: with the kernel's openat2(RESOLVE_IN_ROOT), and with the
walk used where the kernel lacks it."""

import errno
import os
import threading

import pytest

from tests.infra import tree_digest
from tui.host import Host
from tui.journal import DamagedJournal
from tui.resolver import TargetRoot, UnsafePath, openat2_available
from tui.safefile import FileRefused

MODES = [pytest.param(True, id="openat2"), pytest.param(False, id="walk")]


@pytest.fixture(params=MODES)
def openat2(request):
    if request.param and not openat2_available():
        pytest.skip("this kernel has no openat2")
    return request.param


@pytest.fixture
def world(tmp_path):
    """A target beside a canary directory that nothing may ever change."""
    target, canary = tmp_path / "target", tmp_path / "canary"
    for d in ("etc", "usr/lib", "boot/grub", "var/lib"):
        (target / d).mkdir(parents=True)
    canary.mkdir()
    (canary / "victim").write_text("precious")
    os.mknod(canary / "null", 0o666 | 0o020000, os.makedev(1, 3))  # a device node
    return target, canary, tree_digest(canary)


def test_absolute_links_resolve_inside_the_root(world, openat2):
    target, canary, before = world
    os.symlink("/usr/lib", target / "lib")  # merged /usr
    os.symlink(str(canary), target / "etc/grub.d")  # absolute: the canary's path on this machine
    fs = TargetRoot(target, use_openat2=openat2)
    assert fs.real("/lib") == target / "usr/lib"
    host = Host(target, use_openat2=openat2)
    with pytest.raises(UnsafePath):  # <target>/<canary path> does not exist: refused, not created outside
        host.write_file("/etc/grub.d/42_tmpfs-root", "x")
    (target / str(canary).lstrip("/")).mkdir(parents=True)  # now it exists inside the target
    host.write_file("/etc/grub.d/42_tmpfs-root", "x")
    assert (target / str(canary).lstrip("/") / "42_tmpfs-root").read_text() == "x"
    assert tree_digest(canary) == before


def test_relative_links_and_dotdot_stop_at_the_root(world, openat2):
    target, canary, before = world
    os.symlink("../../../../../../../canary", target / "boot/grub/grub.cfg")
    os.symlink("../..", target / "etc/up")
    fs = TargetRoot(target, use_openat2=openat2)
    assert fs.real("/etc/up/etc") == target / "etc"
    assert fs.real("/../../etc") == target / "etc"
    assert not fs.exists("/boot/grub/grub.cfg")  # <target>/canary: nothing there
    (target / "canary").mkdir()
    assert fs.real("/boot/grub/grub.cfg") == target / "canary"
    assert tree_digest(canary) == before


def test_a_write_replaces_a_final_link_instead_of_writing_through_it(world, openat2):
    target, canary, before = world
    (target / "etc/tmpfs-root").mkdir()
    os.symlink(str(canary / "victim"), target / "boot/grub/grub.cfg")
    host = Host(target, use_openat2=openat2)
    host.write_file("/boot/grub/grub.cfg", "ours")
    assert not (target / "boot/grub/grub.cfg").is_symlink()
    assert (target / "boot/grub/grub.cfg").read_text() == "ours"
    host.rollback()  # and the link comes back as a link
    assert os.readlink(target / "boot/grub/grub.cfg") == str(canary / "victim")
    assert tree_digest(canary) == before


@pytest.mark.parametrize("planted", ["var/lib/tmpfs-root", "var/lib/tmpfs-root/backup", "etc/tmpfs-root"])
@pytest.mark.parametrize("to", ["canary", "inside"])
def test_no_link_is_followed_in_tmpfs_roots_own_directories(world, openat2, planted, to):
    target, canary, before = world
    link = target / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    # to the canary on this machine, or to a directory of the target's own (not ours either)
    os.symlink(str(canary) if to == "canary" else "/etc", link)
    target_before = tree_digest(target)
    host = Host(target, use_openat2=openat2)
    with pytest.raises(UnsafePath) as err:
        host.write_file("/etc/tmpfs-root/plan.toml", "x")
        host.write_file("/boot/grub/grub.cfg", "y")  # the backup goes to the backup area
    assert "symbolic link in tmpfs-root's own directory" in str(err.value)
    assert tree_digest(canary) == before
    host.rollback()
    assert tree_digest(target) == target_before


def test_a_journal_naming_files_not_ours_is_refused_and_nothing_is_removed(world, openat2):
    target, canary, before = world
    (target / "home/admin").mkdir(parents=True)
    (target / "home/admin/thesis.tex").write_text("years of work")
    journal = target / "var/lib/tmpfs-root/backup/journal.json"
    journal.parent.mkdir(parents=True)
    hostile = [
        '[{"path": "/home", "existed": false}]',
        '[{"path": "/home/admin", "dir": true}]',
        '[{"path": "/etc/grub.d/42_tmpfs-root", "existed": true, "backup": "/etc/shadow"}]',
        '[{"path": "/boot/../home", "existed": false}]',
        '[{"path": "home", "existed": false}]',
        '[{"path": "/var", "dir": true, "area": true}, {"path": "/home", "area": true}]',
        '{"path": "/home"}',
        "not json",
        '[{"path": 7}]',
    ]
    for text in hostile:
        journal.write_text(text)
        target_before = tree_digest(target)
        host = Host(target, use_openat2=openat2)
        with pytest.raises(DamagedJournal) as err:
            host.rollback(host.pending_journal())
        assert "journal.json" in str(err.value) and "\n" not in str(err.value)
        assert tree_digest(target) == target_before, text
    assert tree_digest(canary) == before


@pytest.mark.parametrize("kind", ["fifo", "device", "dir", "huge", "link-out"])
def test_a_journal_that_is_not_a_small_regular_file_is_refused_without_blocking(world, openat2, kind):
    target, canary, before = world
    journal = target / "var/lib/tmpfs-root/backup/journal.json"
    journal.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(journal)
    elif kind == "device":
        os.mknod(journal, 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero
    elif kind == "dir":
        journal.mkdir()
    elif kind == "huge":
        journal.write_text("[" + " " * (2 << 20) + "]")
    else:
        os.symlink(str(canary / "victim"), journal)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(_pending(target, openat2)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading the journal blocked"
    assert isinstance(result[0], DamagedJournal), result
    assert tree_digest(canary) == before


def _pending(target, openat2):
    try:
        return Host(target, use_openat2=openat2).pending_journal()
    except Exception as e:
        return e


def test_reads_refuse_fifos_devices_and_oversized_files(world, openat2):
    target, _, _ = world
    os.mkfifo(target / "etc/fifo")
    os.mknod(target / "etc/zero", 0o600 | 0o020000, os.makedev(1, 5))
    (target / "etc/big").write_bytes(b"x" * 2048)
    fs = TargetRoot(target, use_openat2=openat2)
    for name, what in (("fifo", "a FIFO"), ("zero", "a character device")):
        with pytest.raises(FileRefused) as err:
            fs.read_bytes(f"/etc/{name}", 1024)
        assert what in err.value.strerror
    with pytest.raises(FileRefused) as err:
        fs.read_bytes("/etc/big", 1024)
    assert err.value.errno == errno.EFBIG


def test_remove_tree_refuses_what_is_not_ours(world, openat2):
    target, canary, before = world
    state = target / "etc/tmpfs-root"
    state.mkdir()
    (state / "plan.toml").write_text("x")
    os.symlink(str(canary), state / "evil")
    host = Host(target, use_openat2=openat2)
    with pytest.raises(Exception) as err:
        host.remove_tree("/etc/tmpfs-root")
    assert "not tmpfs-root's" in str(err.value)
    host.rollback()
    assert (state / "plan.toml").read_text() == "x"
    assert tree_digest(canary) == before


def test_the_walk_and_openat2_agree(world):
    if not openat2_available():
        pytest.skip("this kernel has no openat2")
    target, canary, _ = world
    os.symlink("/usr/lib", target / "lib")
    os.symlink("../../..", target / "usr/lib/up")
    os.symlink("lib/up/etc", target / "etc2")
    walk, kernel = TargetRoot(target, use_openat2=False), TargetRoot(target, use_openat2=True)
    for path in ("/lib", "/lib/up", "/etc2", "/lib/up/lib/up/boot/grub", "/etc/../../boot", "/usr/lib/../lib"):
        assert walk.real(path) == kernel.real(path), path
