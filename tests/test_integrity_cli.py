"""What a hostile review found, each hole with the test that closes it:

* ``--json``: stdout holds one JSON object and nothing else, even when an interrupted
  earlier run is rolled back first (the Ansible role parses stdout as JSON); an error
  leaves it empty;
* ``image create``: the image and its .sha256 are 0600 unless --mode widens them, a bad
  --mode is one line and writes nothing, and the partial file is never readable by others
  while it is written, whatever the umask;
* the log: its directory and file are opened as the lock's are; each hostile case
  (symbolic links, a directory others may write in, a FIFO, a hard link, another user's
  file) leaves the log unwritten, the work done, and one line saying where and why.

The transactions run in-process on a fake target whose dracut and GRUB tools are busybox
stand-ins (tests/infra.FAKE_TOOLS), so each case takes about a second.
"""

import json
import os
import stat
from pathlib import Path

import pytest

from tests.infra import cli_inproc, make_test_rootfs, make_tool_target, tree_digest
from tui import owned
from tui.host import Host
from tui.plan import Plan
from tui.transaction import apply_steps

BASE = ["--source", "nfs:10.0.0.11:/srv/images", "--image", "images/rootfs.tar.zst"]


@pytest.fixture
def target(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPFS_ROOT_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.setenv("TMPFS_ROOT_LOG_DIR", str(tmp_path / "log"))
    return make_tool_target(tmp_path / "target")


# ------------------------------------------------------------------------ --json
PLAN = Plan(source=BASE[1], image=BASE[3])


def interrupt_an_apply(target: Path) -> None:
    """An apply killed after writing the boot entries: no commit, its journal stays."""
    _, steps = apply_steps(PLAN, Host(target))
    for step in steps[:4]:
        step.action()
    assert (target / owned.JOURNAL.lstrip("/")).is_file()


def test_apply_json_after_rolling_back_an_interrupted_run_prints_only_the_object(target):
    interrupt_an_apply(target)
    result = cli_inproc("apply", "--root", target, *BASE, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole of stdout: one object, nothing before or after
    assert isinstance(report, dict) and report["changed"] and report["recovered"]
    assert "rolled back" in result.stderr and "rolled back" not in result.stdout
    assert not (target / owned.JOURNAL.lstrip("/")).exists()


def test_apply_json_reports_a_change_when_only_the_rollback_changed_the_target(target):
    """Applied, then a second run of the same plan killed midway: the next run only rolls it
    back (the plan's files are as they were), yet the host changed: "changed" says so."""
    assert cli_inproc("apply", "--root", target, *BASE, "--yes").returncode == 0
    applied = tree_digest(target)
    Host(target).journal.back_up(owned.PLAN_FILE)  # as a run does before it writes
    (target / owned.PLAN_FILE.lstrip("/")).write_text("# half written\n")
    result = cli_inproc("apply", "--root", target, *BASE, "--yes", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] and report["recovered"] == [owned.PLAN_FILE]
    assert tree_digest(target) == applied


@pytest.mark.parametrize(
    "argv",
    [
        ["apply", "--root", "{target}", *BASE, "--yes", "--json"],
        ["apply", "--root", "{target}", *BASE, "--json"],  # no terminal to ask on: refused
        ["status", "--root", "{target}", "--json"],
        ["plan", "--root", "{target}", "--source", "nfs:", "--json"],
        ["image", "inspect", "{target}/absent.tar", "--json"],
    ],
    ids=["damaged-journal", "not-confirmed", "status", "plan-invalid", "inspect-absent"],
)
def test_json_stdout_is_empty_or_one_object_on_failure(target, argv):
    journal = target / owned.JOURNAL.lstrip("/")
    journal.parent.mkdir(parents=True)
    journal.write_text("[{]")  # damaged: apply refuses, status reports it
    result = cli_inproc(*[a.format(target=target) for a in argv])
    assert result.returncode != 0, result
    if result.stdout:
        assert isinstance(json.loads(result.stdout), dict), result.stdout
    else:
        assert result.stderr.count("tmpfs-root: error:") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_the_question_before_apply_is_asked_on_stderr(monkeypatch, capsys):
    """apply --json without --yes on a terminal: the question must not land in the JSON."""
    import io

    from tui.cli import UsageError, _confirm

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    with pytest.raises(UsageError, match="not confirmed"):
        _confirm("Apply these changes to /?", False, "apply")
    said = capsys.readouterr()
    assert said.out == "" and "Apply these changes to /? [y/N]" in said.err


# ------------------------------------------------------------------ image create
def small_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/shadow").write_text("root:$6$secret:19000:0:99999:7:::\n")
    (tree / "etc/shadow").chmod(0o600)
    return tree


@pytest.mark.parametrize("extra,mode", [([], 0o600), (["--mode", "0640"], 0o640), (["--mode=644"], 0o644)])
def test_image_and_its_sidecar_are_private_unless_mode_widens_them(tmp_path, extra, mode):
    tree = small_tree(tmp_path)
    out = tmp_path / "out/root.tar"
    out.parent.mkdir()
    old = os.umask(0)  # nothing narrows what create gives
    try:
        made = cli_inproc("image", "create", f"--from={tree}", f"--output={out}", "--format=tar", *extra)
    finally:
        os.umask(old)
    assert made.returncode == 0, made.stderr
    for path in (out, out.with_name("root.tar.sha256"), out.with_name("root.tar.pin")):
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))


@pytest.mark.parametrize("bad", ["0755", "0666", "4600", "1600", "2640", "0620", "0602", "999", "12", "0o600", "rw"])
def test_a_bad_mode_is_refused_in_one_line_and_nothing_is_written(tmp_path, bad):
    tree = small_tree(tmp_path)
    out = tmp_path / "out/root.tar"
    out.parent.mkdir()
    made = cli_inproc("image", "create", f"--from={tree}", f"--output={out}", f"--mode={bad}")
    assert made.returncode == 2 and made.stdout == ""
    assert made.stderr.count("\n") == 1 and made.stderr.startswith(f"tmpfs-root: error: --mode '{bad}': accepted:")
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("fmt", ["tar", "zst"])
def test_the_partial_file_is_never_readable_by_others_while_it_is_written(tmp_path, fmt):
    from tui.image_create import create, make_plan

    tree = make_test_rootfs(tmp_path / "tree")
    (tree / "blob").write_bytes(os.urandom(3 << 20))
    out = tmp_path / ("out/root.tar" if fmt == "tar" else f"out/root.tar.{fmt}")
    out.parent.mkdir()
    seen = []

    def progress(*_):
        for p in out.parent.iterdir():
            if p.name.endswith(".partial"):
                seen.append(stat.S_IMODE(p.lstat().st_mode))

    old = os.umask(0)  # the widest umask: the mode create asks for is what the file gets
    try:
        create(make_plan(str(tree), str(out), fmt), progress=progress)
    finally:
        os.umask(old)
    assert seen and all(mode & 0o077 == 0 for mode in seen), [oct(m) for m in seen]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


# ----------------------------------------------------------------------- the log
def hostile_log(case: str, tmp: Path) -> tuple[Path, str]:
    """A log directory set up as *case* says; returns it and what the warning must name."""
    real = tmp / "real"
    real.mkdir(mode=0o700)
    victim = tmp / "victim"
    victim.write_text("precious\n")
    log = tmp / "log"
    if case == "symlinked-directory":
        log.symlink_to(real)
        return log, f"{log} is a symbolic link, not a directory"
    if case == "symlink-in-a-parent":
        (tmp / "parent").symlink_to(tmp)
        return tmp / "parent/real", f"{tmp}/parent is a symbolic link, not a directory"
    log.mkdir(mode=0o700)
    if case == "world-writable-directory":
        log.chmod(0o777)
        return log, f"{log} is writable by group or others (mode 0777)"
    if case == "directory-of-another-user":
        os.chown(log, 65534, 65534)
        return log, f"{log} is owned by uid 65534, not 0"
    if case == "fifo":
        os.mkfifo(log / "tmpfs-root.log", 0o600)
        return log, f"{log}/tmpfs-root.log is a FIFO, not a regular file"
    if case == "symlinked-file":
        (log / "tmpfs-root.log").symlink_to(victim)
        return log, f"{log}/tmpfs-root.log is a symbolic link, not a regular file"
    if case == "hard-linked-file":
        victim.chmod(0o600)
        os.link(victim, log / "tmpfs-root.log")
        return log, f"{log}/tmpfs-root.log has 2 hard links; accepted: a file of its own (one link)"
    if case == "file-of-another-user":
        (log / "tmpfs-root.log").write_text("")
        (log / "tmpfs-root.log").chmod(0o600)
        os.chown(log / "tmpfs-root.log", 65534, 65534)
        return log, f"{log}/tmpfs-root.log is owned by uid 65534, not 0"
    if case == "world-writable-file":
        (log / "tmpfs-root.log").write_text("")
        (log / "tmpfs-root.log").chmod(0o666)
        return log, f"{log}/tmpfs-root.log is writable by group or others (mode 0666)"
    raise AssertionError(case)


LOG_CASES = [
    "symlinked-directory",
    "symlink-in-a-parent",
    "world-writable-directory",
    "directory-of-another-user",
    "fifo",
    "symlinked-file",
    "hard-linked-file",
    "file-of-another-user",
    "world-writable-file",
]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("case", LOG_CASES)
def test_a_hostile_log_is_not_written_and_the_apply_goes_on(target, tmp_path, case):
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    log_dir, says = hostile_log(case, hostile)
    outside = tree_digest(hostile)
    # a FIFO opened for writing would block for ever: the alarm fails the test instead
    result = cli_inproc("apply", "--root", target, *BASE, "--yes", env={"TMPFS_ROOT_LOG_DIR": str(log_dir)}, timeout=60)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "log not" in line]
    assert warnings == [f"tmpfs-root: warning: log not written: {says}"], result.stderr
    assert tree_digest(hostile) == outside, "the log was written where it must not be"
    assert (hostile / "victim").read_text() == "precious\n"
    assert (target / "etc/tmpfs-root/state.json").is_file()  # the work was done


def test_a_missing_log_directory_is_made_private_and_written(target, tmp_path):
    log_dir = tmp_path / "new/log"
    result = cli_inproc("apply", "--root", target, *BASE, "--yes", env={"TMPFS_ROOT_LOG_DIR": str(log_dir)})
    assert result.returncode == 0 and "log not" not in result.stderr, result.stderr
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    st = (log_dir / "tmpfs-root.log").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1
    assert "=== done: changed" in (log_dir / "tmpfs-root.log").read_text()


def test_the_lock_directory_is_refused_through_a_symlinked_parent(target, tmp_path, monkeypatch):
    """The lock's directory is opened as the log's: a link in any component is refused."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "elsewhere")
    before = tree_digest(target)
    result = cli_inproc(
        "apply", "--root", target, *BASE, "--yes", env={"TMPFS_ROOT_LOCK_DIR": str(tmp_path / "via/lock")}
    )
    assert result.returncode == 1, result
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("tmpfs-root: error:")]
    assert f"{tmp_path}/via is a symbolic link, not a directory" in line
    assert tree_digest(target) == before and not (tmp_path / "elsewhere/lock").exists()
