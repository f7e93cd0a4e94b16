"""The README's install line, taken from the README itself and run as written inside stock
Debian 12 and 13 systems (the debootstrapped targets: the distribution's Python only, no pip,
PEP 668's externally-managed marker in force once python3 is there), then the installed
command used as an admin would: --version, a plan, and the TUI's dry run without a terminal.

The targets are copies: the cached ones stay as they were. Their package lists are brought up
to date first (a stock host's are); the line fetches from Debian's mirror and PyPI."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra import REPO, apt_install, debian_target, sh
from tui.host import Host

pytestmark = [pytest.mark.chroot, pytest.mark.slow]

CHECKOUT = "/root/tmpfs-root"


def readme_install_line() -> str:
    """The first command of the README's first shell block: the one that installs the tool."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^```sh\n(.*?)^```", text, re.M | re.S)
    assert block, "the README has no shell block"
    line = block.group(1).splitlines()[0]
    assert "tmpfs-root" in line and "venv" in line, line
    return line


def copy_checkout(dest: Path) -> None:
    """The files of this checkout (what a git clone of it holds), as an admin's checkout."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=False)
    if listed.returncode == 0 and listed.stdout:
        names = [n for n in listed.stdout.decode().split("\0") if n]
    else:  # not a git checkout (an exported tree): everything but build products
        names = [
            str(p.relative_to(REPO))
            for p in REPO.rglob("*")
            if p.is_file() and not {"__pycache__", ".git", "build"} & set(p.relative_to(REPO).parts)
        ]
    for name in names:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_the_readme_install_line_works_on_stock_debian(tmp_path, suite):
    system = tmp_path / "system"
    sh("cp", "-a", "--reflink=auto", debian_target(suite), system)
    (system / ".complete").unlink(missing_ok=True)
    host = Host(system)
    # stock: no pip, no tmpfs-root; the distribution's initramfs generator is there
    assert not (system / "opt/tmpfs-root").exists() and not host.which("pip3")
    assert not list((system / "usr/lib/python3/dist-packages").glob("pip"))
    assert (system / "usr/sbin/update-initramfs").exists()
    apt_install(host, [], update=True)  # current package lists, as on a host in use
    # This machine reaches PyPI through a proxy whose CA its own trust store holds: a host on
    # this network would trust it too (its admin's doing, not the tool's), so the copy gets
    # the machine's bundle where Debian keeps it (pip's and curl's settings name that path).
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        shutil.copy2(bundle, system / "etc/ssl/certs/ca-certificates.crt")
    copy_checkout(system / CHECKOUT.lstrip("/"))

    line = readme_install_line()
    run = host.run(["sh", "-c", f"cd {CHECKOUT} && {line}"], check=False, timeout=900)
    # the line ends by opening the TUI in a dry run; here there is no terminal: one line, exit 2
    assert run.returncode == 2, run.output[-3000:]
    last = run.lines[-1]
    assert last.startswith("tmpfs-root: error: the screen needs a terminal"), run.output[-3000:]
    assert "Traceback" not in run.output

    # Debian's Python refuses pip into the system (PEP 668): the line went around it, not through
    marker = list((system / "usr/lib").glob("python3.*/EXTERNALLY-MANAGED"))
    assert marker, "the distribution's python3 is not externally managed: not a stock system"
    assert (system / "usr/local/sbin/tmpfs-root").is_symlink()
    assert not list((system / "usr/lib/python3/dist-packages").glob("textual*"))

    version = host.run(["tmpfs-root", "--version"]).output
    assert re.fullmatch(r"tmpfs-root \d+\.\d+\.\d+\n", version), version
    plan = host.run(["tmpfs-root", "plan", "--source", "LABEL=images", "--image", "rootfs.tar.zst"], check=False)
    assert plan.returncode == 0, plan.output
    kver = sorted(p.name for p in (system / "lib/modules").iterdir())[-1]
    assert f"dracut --force --kver {kver} --add tmpfs-root" in plan.output
    assert "root=tmpfs:LABEL=images rd.tmpfs.imgfile=rootfs.tar.zst" in plan.output

    # what the kernel hooks need is there; the distribution's initramfs-tools stays
    assert host.which("dracut") and (system / "usr/sbin/update-initramfs").exists()
    assert host.run(["dpkg-query", "-W", "-f=${Status}", "dracut"], check=False).output != "install ok installed"
    assert "install ok installed" in host.run(["dpkg-query", "-W", "-f=${Status}", "initramfs-tools"]).output
