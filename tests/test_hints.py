"""Hints know their target: every command the tool tells its user to run (apply's "Next:",
status's fixes, validation's, the TUI's) carries --root DIR when one was given, made by one
renderer (tui/hints.py), so that none can drift; and a fix, run as printed, fixes."""

import re
import shlex

import pytest

from tests.infra import cli_inproc, make_tool_target
from tui.engine import Engine
from tui.hints import command, target_file

#: A `tmpfs-root COMMAND` in a line of text, for the commands that take --root.
COMMAND = re.compile(r"\btmpfs-root (plan|apply|status|remove|devices)\b( --root (?:'[^']*'|\S+))?")


def commands_in(lines: list[str], target) -> list[str]:
    """Every tmpfs-root command in *lines*; each must carry --root *target*, quoted."""
    found = []
    for line in lines:
        for m in COMMAND.finditer(line):
            assert m.group(2) == f" --root {shlex.quote(str(target))}", line
            found.append(m.group(1))
    return found


def test_a_command_is_rendered_for_its_target_quoted_as_typed():
    assert command("/", "status") == "tmpfs-root status"
    assert command("/mnt/my disk", "apply", "--plan", target_file("/mnt/my disk", "/etc/tmpfs-root/plan.toml")) == (
        "tmpfs-root apply --root '/mnt/my disk' --plan '/mnt/my disk/etc/tmpfs-root/plan.toml'"
    )
    assert command("/mnt/t", "image", "inspect", "FILE") == "tmpfs-root image inspect FILE"  # refuses --root
    assert command("/mnt/a\nb", "remove") == "tmpfs-root remove --root $'/mnt/a\\nb'"  # one line, as bash reads it


@pytest.fixture
def target(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPFS_ROOT_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.setenv("TMPFS_ROOT_LOG_DIR", str(tmp_path / "log"))
    return make_tool_target(tmp_path / "my target")  # a space: the hints must quote it


def test_every_hint_of_a_root_run_carries_root_and_its_fix_works(target):
    plan = ["--source", "LABEL=tmpfs-root-no-such-volume", "--image", "images/rootfs.tar.zst"]
    lines: list[str] = []

    def run(*args, code=0):
        result = cli_inproc(*args)
        assert result.returncode == code, result.stderr
        lines.extend((result.stdout + result.stderr).splitlines())
        return result

    run("plan", "--root", target, *plan)  # the source matches no device: check it with devices
    run("apply", "--root", target, *plan, "--yes")  # Next:
    run("--root", target, code=2)  # the screen needs a terminal: the commands instead
    engine = Engine(target)
    for boot in ("once", "default", "menu"):
        engine.edit(boot=boot)
        lines.extend(engine.next_steps().splitlines())
    lines.append(engine.command("apply", "--plan", "FILE"))  # the TUI's Save plan

    initrd = next(target.glob("boot/initrd-tmpfs-root-*.img"))
    initrd.unlink()
    fixes = [x for x in run("status", "--root", target, code=1).stderr.splitlines() if "is missing: run" in x]
    assert len(fixes) == 1
    fix = shlex.split(fixes[0].split("run `", 1)[1].rstrip("`"))
    run(*fix[1:], "--yes")  # the fix as printed (without a terminal to ask on), its --plan the target's own
    assert initrd.is_file() and run("status", "--root", target).returncode == 0

    (target / "etc/tmpfs-root/state.json").write_text("{not json")
    run("status", "--root", target, code=1)  # damaged: move it aside, then remove or apply
    (target / "etc/tmpfs-root/state.json").unlink()
    run("status", "--root", target, code=1)  # files but no state: remove

    seen = commands_in(lines, target)
    assert {"plan", "apply", "status", "remove", "devices"} <= set(seen), lines
    assert any(x.startswith(f"Next: boot the system in {target} to boot it once") for x in lines)  # not this one
    state = shlex.quote(str(target / "etc/tmpfs-root/state.json"))
    assert any(f"(`mv {state} " in x for x in lines)  # the damaged state moved aside in the target, not here


def test_a_hint_names_the_very_path_given_even_with_a_backslash_or_a_control_character():
    """What is pasted into a shell names the same directory: a backslash stays one (it was
    doubled), a newline or an escape comes in bash's $'…' form, never raw on the terminal."""
    import subprocess

    from tui.hints import command

    for root in ("/tmp/x\\y", "/tmp/a\nb", "/tmp/it's\x1b[2J"):
        hint = command(root, "status")
        assert hint.startswith("tmpfs-root status --root ") and "\x1b" not in hint and "\n" not in hint
        word = hint.removeprefix("tmpfs-root status --root ")
        said = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, text=True, check=True)
        assert said.stdout == root, (hint, said.stdout)
