"""The Ansible role (ansible/roles/tmpfs_root) run by a real ansible-playbook, connection
local, against a target directory with busybox and stand-ins for dracut and the GRUB tools
(the transaction is the real one; the role is what is tested): it installs tmpfs-root into a
virtual environment from a wheel built from this checkout, checked against its sha256, and
runs that; check mode changes nothing and reports a change, apply reports a change, a second
apply none, check mode then none. It installs nothing unpinned: without a wheel and its
sha256 or a requirements file with hashes it stops at once, a wheel whose sha256 differs
never reaches pip, and a requirements file is installed with pip --require-hashes. pip never
asks an index here (PIP_NO_INDEX)."""

import hashlib
import json
import re
import shutil
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
        tmpfs_root_virtualenv: {venv}
        # the virtual environment sees this Python's packages: tmpfs-root's dependencies
        ansible_python_interpreter: {python}
        tmpfs_root_environment:
          TMPFS_ROOT_LOCK_DIR: {lock}
          TMPFS_ROOT_LOG_DIR: {log}
{install}"""


def write_playbook(workdir: Path, target: Path, plan: Path, install: str) -> None:
    """site.yml in *workdir*: the role with *install* (role variables, one per line, indented
    for the vars block) and a virtual environment in *workdir*."""
    (workdir / "site.yml").write_text(
        PLAYBOOK.format(
            plan=plan,
            target=target,
            venv=workdir / "venv",
            python=sys.executable,
            lock=workdir / "lock",
            log=workdir / "log",
            install="".join(f"        {line}\n" for line in install.splitlines()),
        )
    )


def run_playbook(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """ansible-playbook on *workdir*/site.yml, connection local."""
    return subprocess.run(
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
            "PIP_NO_INDEX": "1",  # what the role installs is on this machine; no index is asked
        },
    )


def playbook(workdir: Path, *extra: str) -> tuple[int, str]:
    """Run the playbook; the number of changed tasks from the recap, and the output."""
    result = run_playbook(workdir, *extra)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", output)
    assert recap, output
    return int(recap.group(1)), output


def failed(workdir: Path, *extra: str) -> str:
    """Run the playbook, which must fail; its output."""
    result = run_playbook(workdir, *extra)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    return output


def saved_plan(tmp_path: Path) -> tuple[Path, Path]:
    """A tool target and a plan saved for it: (target, plan)."""
    target = make_tool_target(tmp_path / "target")
    plan = tmp_path / "ramroot.toml"
    saved = run_cli(
        "plan", "--root", target, "--source", "nfs:10.0.0.11:/srv/images", "--image", "images/rootfs.tar.zst",
        "--save", plan,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    return target, plan


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """A wheel of tmpfs-root built from this checkout, and its sha256."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (whl,) = out.glob("tmpfs_root-*.whl")
    return whl, hashlib.sha256(whl.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.needs("ansible-playbook")
def test_the_role_applies_once_reports_changes_truthfully_and_supports_check_mode(tmp_path, wheel):
    target, plan = saved_plan(tmp_path)
    whl, sha = wheel
    write_playbook(tmp_path, target, plan, f"tmpfs_root_wheel: {whl}\ntmpfs_root_wheel_sha256: {sha}")
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


@pytest.mark.needs("ansible-playbook")
@pytest.mark.parametrize(
    "install,says",
    [
        ("", "tmpfs_root_install: nothing pinned to install; accepted: tmpfs_root_wheel"),
        ("tmpfs_root_pip_name: tmpfs-root", "tmpfs_root_pip_name: no longer read"),
        ("tmpfs_root_wheel: dist/tmpfs_root-0.1.0-py3-none-any.whl", "and its sha256 (64 hex digits"),
        ("tmpfs_root_wheel: dist/tmpfs-root.deb\ntmpfs_root_wheel_sha256: " + "a" * 64, "a .whl, .tar.gz or .zip"),
        (
            "tmpfs_root_wheel: a.whl\ntmpfs_root_wheel_sha256: " + "a" * 64 + "\ntmpfs_root_requirements: r.txt",
            "both set; accepted: one of them",
        ),
    ],
)
def test_nothing_unpinned_is_installed_the_role_stops_at_once_saying_what_to_set(tmp_path, install, says):
    """The defaults name no package: with tmpfs_root_install (the default) and nothing pinned,
    the role fails on its first checks, before it asks the host anything."""
    target, plan = saved_plan(tmp_path)
    write_playbook(tmp_path, target, plan, install)
    output = failed(tmp_path)
    assert says in output, output
    assert "Is tmpfs-root there" not in output and not (tmp_path / "venv").exists()


@pytest.mark.needs("ansible-playbook")
def test_with_install_off_nothing_needs_pinning(tmp_path):
    """tmpfs_root_install: false with the tool already there: no pin asked for; the command
    named is run (here one that is missing, so the apply itself fails)."""
    target, plan = saved_plan(tmp_path)
    write_playbook(tmp_path, target, plan, "tmpfs_root_install: false")
    output = failed(tmp_path)
    assert "nothing pinned" not in output and "TASK [tmpfs_root : tmpfs-root apply" in output, output
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
@pytest.mark.needs("ansible-playbook")
def test_a_wheel_whose_sha256_differs_never_reaches_pip(tmp_path, wheel):
    target, plan = saved_plan(tmp_path)
    whl, sha = wheel
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    write_playbook(tmp_path, target, plan, f"tmpfs_root_wheel: {whl}\ntmpfs_root_wheel_sha256: {wrong.upper()}")
    output = failed(tmp_path)
    assert f"has sha256 {sha}, not tmpfs_root_wheel_sha256 {wrong}" in output, output
    assert "TASK [tmpfs_root : pip install]" not in output and not (tmp_path / "venv").exists()


@pytest.mark.slow
@pytest.mark.needs("ansible-playbook")
def test_a_requirements_file_is_installed_with_require_hashes(tmp_path, wheel):
    """A requirement without --hash is refused by pip; with the wheel's hash it installs.
    (The dependencies are present here; an admin's file pins them too.)"""
    target, plan = saved_plan(tmp_path)
    whl, sha = wheel
    requirements = tmp_path / "requirements.txt"
    write_playbook(tmp_path, target, plan, f"tmpfs_root_requirements: {requirements}")
    requirements.write_text(f"tmpfs-root @ {whl.as_uri()}\n")
    output = failed(tmp_path)
    assert "--require-hashes" in output and not (tmp_path / "venv/bin/tmpfs-root").exists(), output
    shutil.rmtree(tmp_path / "venv")  # made by the failed run; pip's change shows in a new one
    requirements.write_text(f"tmpfs-root @ {whl.as_uri()} --hash=sha256:{sha}\n")
    changed, _ = playbook(tmp_path)
    assert changed == 2 and (tmp_path / "venv/bin/tmpfs-root").exists()


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
