"""apply / status / remove in-process on a fake target whose dracut and GRUB tools are
busybox stand-ins (tests/infra.FAKE_TOOLS): the transaction's own logic (idempotence,
rollback, recovery of a killed run, the dry run, modes kept) in a second per test. The
real tools run the same transaction in test_apply.py."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.infra import FAKE_KVER, REPO, make_tool_target, tree_digest
from tui import owned
from tui.host import Host, RecordingHost
from tui.plan import Plan
from tui.transaction import DamagedState, TransactionError, apply, apply_steps, record, remove, remove_steps, status

PLAN = Plan(source="nfs:10.0.0.11:/srv/images", image="images/rootfs.tar.zst")


@pytest.fixture
def target(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPFS_ROOT_LOCK_DIR", str(tmp_path / "lock"))
    return make_tool_target(tmp_path / "target")


def made_dirs(before: dict, after: dict) -> list[str]:
    """What differs between two digests, when it is only directories apply made."""
    diff = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [
        k for k in diff if not (after.get(k, "").startswith("dir:") and k not in before and owned.may_make_dir("/" + k))
    ]


def test_apply_twice_changes_nothing_and_remove_restores_every_file(target):
    before = tree_digest(target)
    outcome = apply(PLAN, Host(target))
    assert outcome.changed
    report = status(Host(target))
    assert report["installed"] and report["problems"] == [] and report["boot_once_pending"]
    applied = tree_digest(target)
    again = apply(PLAN, Host(target))
    assert not again.changed and set(again.notes.values()) == {"unchanged"}
    assert tree_digest(target) == applied
    remove(Host(target))
    assert tree_digest(target) == before  # the directories apply made (/etc/grub.d, /var/lib, …) too


def test_remove_takes_away_only_the_empty_directories_apply_made(target):
    """A directory the system had before apply stays (even when apply's file was its only
    one), and so does one apply made that now holds someone else's file; the dry run shows
    the removal of the others and removes nothing."""
    (target / "etc/kernel/postinst.d").mkdir(parents=True)  # the distribution's, empty
    apply(PLAN, Host(target))
    made = json.loads((target / owned.STATE_FILE.lstrip("/")).read_text())["made_dirs"]
    assert "/etc/kernel/postrm.d" in made and "/var/lib" in made and "/etc/kernel/postinst.d" not in made
    (target / "etc/grub.d/40_custom").write_text("# the admin's\n")
    preview = RecordingHost(target)
    before = tree_digest(target)
    for step in remove_steps(preview):
        step.action()
    assert tree_digest(target) == before
    assert ("remove", "/etc/kernel/postrm.d") in [(a.kind, a.path) for a in preview.actions]
    assert ("remove", "/etc/grub.d") not in [(a.kind, a.path) for a in preview.actions]
    remove(Host(target))
    assert (target / "etc/kernel/postinst.d").is_dir() and (target / "etc/grub.d/40_custom").is_file()
    assert not (target / "etc/kernel/postrm.d").exists() and not (target / "var").exists()


def test_a_state_naming_a_directory_that_is_not_tmpfs_roots_is_damaged(target):
    apply(PLAN, Host(target))
    path = target / owned.STATE_FILE.lstrip("/")
    state = json.loads(path.read_text())
    path.write_text(json.dumps(dict(state, made_dirs=["/home"])))
    with pytest.raises(DamagedState, match="'made_dirs' is not what apply writes"):
        remove(Host(target))
    assert (target / "etc/tmpfs-root").is_dir()


def test_the_dry_run_records_the_very_files_apply_writes(target):
    before = tree_digest(target)
    preview = RecordingHost(target)
    record(PLAN, preview)
    assert tree_digest(target) == before
    host = Host(target)
    apply(PLAN, host)
    assert [(a.kind, a.path) for a in preview.actions] == [(a.kind, a.path) for a in host.actions]


def test_a_failing_step_rolls_every_step_back(target):
    before = tree_digest(target)
    (target / "usr/bin/grub-script-check").write_text("#!/bin/sh\necho 'syntax error' >&2\nexit 1\n")
    before = tree_digest(target)
    with pytest.raises(TransactionError) as err:
        apply(PLAN, Host(target))
    assert "regenerate the GRUB configuration" in str(err.value) and "syntax error" in str(err.value)
    assert made_dirs(before, tree_digest(target)) == []
    assert not (target / "var/lib/tmpfs-root").exists()


def test_a_killed_run_is_rolled_back_by_the_next(target):
    before = tree_digest(target)
    host = Host(target)
    _, steps = apply_steps(PLAN, host)
    for step in steps[:4]:  # killed after writing the entries: no commit, the journal stays
        step.action()
    assert (target / owned.JOURNAL.lstrip("/")).is_file()
    outcome = remove(Host(target))
    assert outcome.recovered  # undone first
    assert made_dirs(before, tree_digest(target)) == []


def test_grub_cfg_keeps_its_mode_and_owner(target):
    cfg = target / "boot/grub/grub.cfg"
    cfg.chmod(0o600)
    os.chown(cfg, 0, 4)  # a group that is not root's
    apply(PLAN, Host(target))
    st = cfg.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_gid == 4
    assert "tmpfs-root-" + FAKE_KVER in cfg.read_text()


def test_every_path_a_transaction_touches_is_one_tmpfs_root_owns(target):
    host = Host(target)
    apply(PLAN, host)
    remove(host)
    for action in host.written_files():
        assert owned.may_touch(action.path) or owned.may_make_dir(action.path), action.path


def test_every_apply_and_remove_is_logged_on_this_machine(target, tmp_path, monkeypatch):
    """The log lands in the log directory (here a temporary one), never in the target."""
    from tui.engine import Engine

    monkeypatch.setenv("TMPFS_ROOT_LOG_DIR", str(tmp_path / "log"))
    engine = Engine(target, plan=Plan(source=PLAN.source, image=PLAN.image))
    engine.apply()
    assert (
        engine.log_note == f"the log of this run is {tmp_path / 'log/tmpfs-root.log'} on this machine, not in {target}"
    )
    (target / "usr/bin/grub-script-check").write_text("#!/bin/sh\necho 'syntax error' >&2\nexit 1\n")
    with pytest.raises(TransactionError):
        Engine(target).remove()
    log = (tmp_path / "log/tmpfs-root.log").read_text()
    assert f"=== tmpfs-root apply on {target}" in log and "plan: image = " in log
    assert "[1/7] install the dracut module: start" in log and "=== done: changed" in log
    assert "=== tmpfs-root remove" in log and "syntax error" in log and "=== failed: step" in log
    assert not [p for p in target.rglob("*.log")]
    assert oct((tmp_path / "log").stat().st_mode & 0o777) == "0o700"


def test_a_bls_entry_carries_the_admins_arguments_too(target):
    (target / "boot/loader/entries").mkdir(parents=True)
    (target / "etc/default").mkdir(parents=True)
    (target / "etc/default/grub").write_text('GRUB_ENABLE_BLSCFG=true\nGRUB_CMDLINE_LINUX="console=ttyS0 rw"\n')
    apply(PLAN, Host(target))
    from tui.bootloader import parse_bls

    entry = parse_bls((target / f"boot/loader/entries/tmpfs-root-{FAKE_KVER}.conf").read_text())
    assert entry["options"].startswith("console=ttyS0 root=tmpfs:NFS=nfs:10.0.0.11:/srv/images ")
    hook_env = (target / "etc/tmpfs-root/hook.env").read_text()
    assert "TMPFS_ROOT_CMDLINE='console=ttyS0 root=tmpfs:" in hook_env  # new kernels' entries too


def test_a_root_run_says_on_the_console_where_its_log_is(target, tmp_path, monkeypatch):
    from tests.infra import cli_inproc

    monkeypatch.setenv("TMPFS_ROOT_LOG_DIR", str(tmp_path / "log"))
    apply(PLAN, Host(target))
    result = cli_inproc("remove", f"--root={target}", "--yes")
    assert result.returncode == 0, result.stderr
    assert f"note: the log of this run is {tmp_path / 'log/tmpfs-root.log'} on this machine, not in {target}" in (
        result.stderr
    )


def test_the_engine_says_what_a_session_changed_and_a_dry_run_changed_nothing(target, tmp_path, monkeypatch):
    """What the TUI's quit dialog says comes from here: a dry run's apply and remove add
    nothing (and write nothing), a real apply and remove each say what they did, an apply
    that changes nothing adds nothing."""
    from tui.engine import Engine

    monkeypatch.setenv("TMPFS_ROOT_LOG_DIR", str(tmp_path / "log"))
    before = tree_digest(target)
    dry = Engine(target, dry_run=True, plan=PLAN)
    dry.apply()
    assert dry.changes == [] and tree_digest(target) == before
    real = Engine(target, plan=PLAN)
    real.apply()
    real.apply()  # nothing more to change
    real.remove()
    assert real.changes == [f"tmpfs-root was applied to '{target}'", f"tmpfs-root was removed from '{target}'"]


@pytest.mark.parametrize("boot", ["once", "menu"])
def test_a_grub_mkconfig_that_skips_grub_d_fails_the_step_and_arms_nothing(target, boot):
    """Its grub.cfg has no tmpfs-root entry: the step fails before grub.cfg is replaced, and
    before any boot mode is set; everything is rolled back."""
    (target / "usr/bin/grub-mkconfig").write_text(
        '#!/bin/sh\n[ "$1" = -o ] || exit 2\necho "# no grub.d here" > "$2.new" && mv "$2.new" "$2"\n'
    )
    before = tree_digest(target)
    with pytest.raises(TransactionError) as err:
        apply(Plan(source=PLAN.source, image=PLAN.image, boot=boot), Host(target))
    assert str(err.value).startswith(
        "step 'regenerate the GRUB configuration' failed: grub-mkconfig wrote no tmpfs-root entry for "
        f"{FAKE_KVER}: /etc/grub.d/42_tmpfs-root did not run"
    )
    assert made_dirs(before, tree_digest(target)) == []  # grub.cfg, grubenv and the rest as before
    assert "next_entry" not in (target / "boot/grub/grubenv").read_text()


def test_a_bls_entry_that_is_not_there_is_never_armed(target):
    """The entry is read back before grub-reboot names it: missing, the step fails."""
    from tui.transaction import Step, run_steps

    (target / "boot/loader/entries").mkdir(parents=True)
    (target / "etc/default").mkdir(parents=True)
    (target / "etc/default/grub").write_text("GRUB_ENABLE_BLSCFG=true\n")
    before = tree_digest(target)
    host = Host(target)
    _, steps = apply_steps(PLAN, host)
    at = [s.name for s in steps].index("set the boot mode (once)")
    entry = target / f"boot/loader/entries/tmpfs-root-{FAKE_KVER}.conf"
    steps.insert(at, Step("lose the entry", entry.unlink))
    with pytest.raises(TransactionError) as err:
        run_steps(host, steps)
    assert f"no tmpfs-root entry in /boot/loader/entries: /boot/loader/entries/tmpfs-root-{FAKE_KVER}.conf" in str(
        err.value
    )
    assert made_dirs(before, tree_digest(target)) == []
    assert "next_entry" not in (target / "boot/grub/grubenv").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_a_dropped_session_during_apply_stops_the_step_and_rolls_back(target, tmp_path, sig):
    """SIGHUP (an ssh session dropped mid-apply) is taken as SIGTERM is: the running command is
    stopped, every step done so far is undone, and the exit says so; nothing is left for the
    next run to recover."""
    started = tmp_path / "dracut-started"
    (target / "usr/bin/dracut").write_text(f"#!/bin/sh\n: > /{started.name}\nexec /bin/busybox sleep 60\n")
    before = tree_digest(target)
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPFS_ROOT_LOG_DIR=str(tmp_path / "log"))
    argv = [sys.executable, "-m", "tui", "apply", f"--root={target}", f"--source={PLAN.source}"]
    proc = subprocess.Popen(
        [*argv, f"--image={PLAN.image}", "--yes"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    marker = target / started.name
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()
    marker.unlink()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rolled back" in err, err
    assert made_dirs(before, tree_digest(target)) == []
    assert not (target / "var/lib/tmpfs-root/journal").exists()  # nothing left to recover


def test_a_made_directory_that_cannot_be_removed_is_kept_and_the_removal_stands(target, monkeypatch):
    """An empty directory apply made that rmdir refuses (a mount point now: EBUSY) is kept;
    remove neither rolls everything back for it nor fails after it is done."""
    import errno as errnos

    apply(PLAN, Host(target))
    real_rmdir = os.rmdir

    def busy(path, *a, dir_fd=None, **kw):
        where = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        if path == "postrm.d" and where == str(target / "etc/kernel"):  # not its backup's copy
            raise OSError(errnos.EBUSY, "Device or resource busy", path)
        return real_rmdir(path, *a, dir_fd=dir_fd, **kw)

    monkeypatch.setattr(os, "rmdir", busy)
    outcome = remove(Host(target))
    assert outcome.changed
    assert (target / "etc/kernel/postrm.d").is_dir() and not any((target / "etc/kernel/postrm.d").iterdir())
    assert not (target / "etc/tmpfs-root").exists()


def test_the_dry_run_of_remove_never_promises_to_remove_a_link(target):
    """A link named as a directory apply made is kept by the real remove (lstat, never
    followed): the dry run says the same."""
    apply(PLAN, Host(target))
    (target / "srv/empty").mkdir(parents=True)
    postrm = target / "etc/kernel/postrm.d"
    for child in postrm.iterdir():
        child.unlink()
    postrm.rmdir()
    postrm.symlink_to("../../srv/empty")
    preview = RecordingHost(target)
    for step in remove_steps(preview):
        step.action()
    assert "/etc/kernel/postrm.d" not in [a.path for a in preview.actions if a.kind == "remove"]
