"""The host object: target-root paths, atomic writes with backups, rollback, dry-run, commands."""

import os

import pytest

from tui.host import JOURNAL, CommandError, Host, RecordingHost


def test_paths_resolve_inside_the_root_even_through_absolute_links(tmp_path):
    root = tmp_path / "t"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", root / "lib")  # merged /usr, as on Debian
    host = Host(root)
    assert host.path("/lib/x") == root / "usr/lib/x"
    assert host.path("/etc/../etc/y") == root / "etc/y"


def test_write_is_atomic_and_backs_up_what_it_replaces(tmp_path):
    host = Host(tmp_path)
    (tmp_path / "etc/grub.d").mkdir(parents=True)
    (tmp_path / "etc/grub.d/42_tmpfs-root").write_text("old")
    host.write_file("/etc/grub.d/42_tmpfs-root", "new", 0o600)
    assert (tmp_path / "etc/grub.d/42_tmpfs-root").read_text() == "new"
    assert oct((tmp_path / "etc/grub.d/42_tmpfs-root").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "var/lib/tmpfs-root/backup/etc/grub.d/42_tmpfs-root").read_text() == "old"
    assert not [p for p in (tmp_path / "etc/grub.d").iterdir() if p.name.endswith(".tmp")]


def test_rollback_restores_replaced_and_removes_created(tmp_path):
    (tmp_path / "etc/grub.d").mkdir(parents=True)
    (tmp_path / "etc/grub.d/42_tmpfs-root").write_text("old")
    host = Host(tmp_path)
    host.write_file("/etc/grub.d/42_tmpfs-root", "new")
    host.write_file("/etc/kernel/postinst.d/z50-tmpfs-root", "created")
    host.remove("/etc/grub.d/42_tmpfs-root")
    host.rollback()
    assert (tmp_path / "etc/grub.d/42_tmpfs-root").read_text() == "old"
    assert not (tmp_path / "etc/kernel").exists()
    assert not (tmp_path / JOURNAL.lstrip("/")).exists()


def test_a_killed_transaction_leaves_a_journal_a_new_host_can_roll_back(tmp_path):
    (tmp_path / "boot/grub").mkdir(parents=True)
    (tmp_path / "boot/grub/grub.cfg").write_text("distro")
    Host(tmp_path).write_file("/boot/grub/grub.cfg", "ours")  # never committed: as if killed here
    later = Host(tmp_path)
    journal = later.pending_journal()
    assert [e["path"] for e in journal if not e.get("dir")] == ["/boot/grub/grub.cfg"]
    later.rollback(journal)
    assert (tmp_path / "boot/grub/grub.cfg").read_text() == "distro"


def test_dry_run_records_and_writes_nothing(tmp_path):
    host = RecordingHost(tmp_path)
    host.write_file("/etc/tmpfs-root/grub.env", "data")
    host.run(["dracut", "--force"])
    host.remove("/etc/tmpfs-root/grub.env")
    assert list(tmp_path.iterdir()) == []
    assert [a.kind for a in host.actions] == ["write", "run", "remove"]
    assert host.commands()[0].argv == ["dracut", "--force"]


def test_dry_run_reads_see_earlier_recorded_writes(tmp_path):
    host = RecordingHost(tmp_path)
    host.write_file("/etc/tmpfs-root/plan.toml", "x = 1")
    assert host.read_text("/etc/tmpfs-root/plan.toml") == "x = 1"
    assert host.listdir("/etc/tmpfs-root") == ["plan.toml"]


def test_run_streams_lines_and_reports_failure_in_one_line():
    host = Host("/")
    seen = []
    result = host.run(["sh", "-c", "echo one; echo two"], on_line=seen.append)
    assert seen == ["one", "two"] and result.returncode == 0
    with pytest.raises(CommandError) as err:
        host.run(["sh", "-c", "echo starting; echo 'disk full' >&2; exit 3"])
    assert str(err.value) == "sh exited with status 3: disk full"


def test_commands_run_inside_a_target_with_chroot(tmp_path):
    assert Host(tmp_path).command_argv(["dracut", "-f"]) == ["chroot", str(tmp_path), "dracut", "-f"]
    assert Host("/").command_argv(["dracut", "-f"]) == ["dracut", "-f"]


def test_queries_run_even_in_a_dry_run():
    host = RecordingHost("/")
    assert host.run(["echo", "hi"], query=True).output == "hi\n"
    assert host.actions == []


def test_which_looks_in_the_target(fake_target):
    host = Host(fake_target)
    assert host.which("dracut") == "/usr/bin/dracut"
    assert host.which("no-such-tool") is None


def test_a_renamed_build_output_is_described_without_a_mode(tmp_path):
    host = RecordingHost(tmp_path)
    host.rename("/boot/initrd-tmpfs-root-6.1.img.new", "/boot/initrd-tmpfs-root-6.1.img")
    assert host.written_files()[0].describe() == "write /boot/initrd-tmpfs-root-6.1.img (built)"


def test_commands_in_a_target_see_proc_sys_dev_which_vanish_with_them(tmp_path):
    import shutil

    for d in ("bin", "proc", "sys", "dev", "run"):
        (tmp_path / d).mkdir()
    shutil.copy("/bin/busybox", tmp_path / "bin/busybox")
    out = (
        Host(tmp_path)
        .run(["/bin/busybox", "sh", "-c", "cat /proc/self/mountinfo; ls /sys/class/block; ls /dev/null"])
        .output
    )
    assert " /proc " in out and " /dev " in out and " /run " in out
    assert "/dev/null" in out
    for d in ("proc", "sys", "dev", "run"):
        assert not os.path.ismount(tmp_path / d)  # a private namespace: nothing left behind
    assert " " + str(tmp_path) not in open("/proc/self/mountinfo").read()


@pytest.mark.needs("fusefat", "mkfs.vfat")
def test_files_on_a_fat_esp_are_written_restored_and_given_their_mode(tmp_path):
    """A FAT ESP has one owner and mode for all its files and refuses (fusefat: does not
    implement) even a chmod to the mode a file already has: writing, copying a mode onto a
    file a command made there, and rolling back must not ask for one. (A real FAT mount
    through FUSE: this machine's kernel has no vfat.)"""
    import subprocess

    esp_image = tmp_path / "esp.img"
    subprocess.run(["truncate", "-s", "32M", str(esp_image)], check=True)
    subprocess.run(["mkfs.vfat", str(esp_image)], check=True, capture_output=True)
    root = tmp_path / "t"
    esp = root / "boot/efi"
    esp.mkdir(parents=True)
    subprocess.run(["fusefat", "-o", "rw+", str(esp_image), str(esp)], check=True, capture_output=True)
    try:
        (esp / "EFI/debian").mkdir(parents=True)
        (esp / "EFI/debian/grub.cfg").write_text("old")
        mode = (esp / "EFI/debian/grub.cfg").stat().st_mode & 0o7777
        host = Host(root)
        host.write_file("/boot/efi/EFI/debian/grub.cfg", "new", mode)
        (esp / "EFI/debian/grub.cfg.new").write_text("made by a command")
        host.copy_mode("/boot/efi/EFI/debian/grub.cfg", "/boot/efi/EFI/debian/grub.cfg.new")
        assert (esp / "EFI/debian/grub.cfg").read_text() == "new"
        host.rollback()
        assert (esp / "EFI/debian/grub.cfg").read_text() == "old"
    finally:
        subprocess.run(["fusermount", "-u", str(esp)], check=False)
