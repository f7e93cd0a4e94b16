"""The Ansible role (ansible/roles/tmpfs_root) run by a real ansible-playbook, connection
local, against a target directory with busybox and stand-ins for dracut and the GRUB tools
(the transaction is the real one; the role is what is tested): it installs tmpfs-root from
this checkout into a virtual environment and runs that; check mode changes nothing and
reports a change, apply reports a change, a second apply none, check mode then none."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra import make_tool_target, run_cli, tree_digest

REPO = Path(__file__).resolve().parent.parent

PLAYBOOK = """
- hosts: all
  gather_facts: false
  roles:
    - role: tmpfs_root
      vars:
        tmpfs_root_plan: {plan}
        tmpfs_root_target: {target}
        tmpfs_root_pip_name: {repo}
        tmpfs_root_virtualenv: {venv}
        tmpfs_root_environment:
          TMPFS_ROOT_LOCK_DIR: {lock}
          TMPFS_ROOT_LOG_DIR: {log}
"""


def playbook(workdir: Path, *extra: str) -> tuple[int, str]:
    """Run the playbook; the number of changed tasks from the recap, and the output."""
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "-c", "local", str(workdir / "site.yml"), *extra],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin:" + str(Path(sys.executable).parent),
            "ANSIBLE_ROLES_PATH": str(REPO / "ansible/roles"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-local"),
            "ANSIBLE_REMOTE_TEMP": str(workdir / "ansible-remote"),
            "ANSIBLE_NOCOLOR": "1",
            "HOME": str(workdir),
        },
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", output)
    assert recap, output
    return int(recap.group(1)), output


@pytest.mark.slow
@pytest.mark.needs("ansible-playbook")
def test_the_role_applies_once_reports_changes_truthfully_and_supports_check_mode(tmp_path):
    target = make_tool_target(tmp_path / "target")
    plan = tmp_path / "ramroot.toml"
    saved = run_cli(
        "plan", "--root", target, "--source", "nfs:10.0.0.11:/srv/images", "--image", "images/rootfs.tar.zst",
        "--save", plan,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    (tmp_path / "site.yml").write_text(
        PLAYBOOK.format(
            plan=plan,
            target=target,
            repo=REPO,
            venv=tmp_path / "venv",
            lock=tmp_path / "lock",
            log=tmp_path / "log",
        )
    )
    before = tree_digest(target)

    changed, _ = playbook(tmp_path, "--check")
    assert changed == 1 and tree_digest(target) == before  # would install; wrote nothing
    assert not (tmp_path / "venv").exists()

    changed, _ = playbook(tmp_path)
    assert changed == 2  # installed (pip, into the virtual environment), applied
    assert (tmp_path / "venv/bin/tmpfs-root").exists()
    status = run_cli("status", "--root", target, "--json")
    assert json.loads(status.stdout)["installed"]
    applied = tree_digest(target)

    changed, _ = playbook(tmp_path)
    assert changed == 0 and tree_digest(target) == applied
    changed, _ = playbook(tmp_path, "--check")
    assert changed == 0

    # A changed plan: check mode says so (apply --dry-run) and writes nothing; apply changes.
    resaved = run_cli("plan", "--plan", plan, "--root", target, "--title", "RAM root", "--save", plan)
    assert resaved.returncode == 0, resaved.stderr
    changed, _ = playbook(tmp_path, "--check")
    assert changed == 1 and tree_digest(target) == applied
    changed, _ = playbook(tmp_path)
    assert changed == 1 and tree_digest(target) != applied


def test_apply_json_is_one_object_on_stdout_and_says_whether_anything_changed(tmp_path):
    """What the role reads: stdout is the JSON object alone (the preview and the steps go to
    stderr), in a dry run, a real apply and an apply with nothing to do."""
    target = make_tool_target(tmp_path / "target")
    args = ["apply", "--root", target, "--source", "nfs:10.0.0.11:/srv/images", "--image", "images/rootfs.tar.zst"]
    results = [run_cli(*args, "--yes", "--json", *extra) for extra in (["--dry-run"], [], [])]
    for r in results:
        assert r.returncode == 0, r.stderr
    dry, first, again = (json.loads(r.stdout) for r in results)
    assert (dry["changed"], dry["dry_run"], first["changed"], again["changed"]) == (True, True, True, False)
    assert dry["files"] == first["files"] and again["files"] == []
    assert "Kernel command line" in results[0].stderr
