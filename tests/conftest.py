"""Shared fixtures and the test run's setup; the heavy machinery (disk images, loop
devices, udevd, the Debian target, QEMU) lives in tests/infra.py.

The run (all xdist workers with it) gets: its own directories for tmpfs-root's log and
locks (nothing in this machine's /var/log or /run), and, where no udevd serves the
machine and the run can select a test that attaches disks (not the quick tier), a private
/run/udev with a udevd of its own (tests/infra.private_udev_session).
Tests that boot QEMU, build in the Debian chroot or attach disk images are marked slow:
`python3 -m pytest -m "not slow"` is the quick tier.
"""

import os
import shutil
import tempfile

import pytest

from tests.infra import make_fake_target, private_udev_session

SLOW_MARKERS = ("qemu", "chroot", "udev")


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller set the run up
        return
    base = tempfile.mkdtemp(prefix="tmpfs-root-tests-")
    os.environ.setdefault("TMPFS_ROOT_LOG_DIR", os.path.join(base, "log"))
    os.environ.setdefault("TMPFS_ROOT_LOCK_DIR", os.path.join(base, "lock"))
    config._tmpfs_root_base = base
    config._tmpfs_root_end_udev = private_udev_session() if may_select_udev_tests(config.option.markexpr) else None


def may_select_udev_tests(markexpr: str) -> bool:
    """Whether the run's -m expression can select a test that attaches disks (marked udev,
    chroot or qemu, and so slow): the quick tier (-m "not slow") cannot, and starts no udevd."""
    if not markexpr:
        return True
    from _pytest.mark.expression import Expression

    heavy = {"slow", "udev", "chroot", "qemu"}
    return any(
        Expression.compile(markexpr).evaluate(lambda name, on=on: name in on)
        for on in ({"slow", "udev"}, {"slow", "chroot"}, {"slow", "qemu"}, heavy)
    )


def pytest_unconfigure(config):
    end = getattr(config, "_tmpfs_root_end_udev", None)
    if end:
        end()
    base = getattr(config, "_tmpfs_root_base", None)
    if base:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fake_target(tmp_path):
    """A directory the engine takes for an installed Debian system (kernel, dracut, GRUB)."""
    return make_fake_target(tmp_path / "target")


def pytest_collection_modifyitems(config, items):
    """QEMU, chroot and disk-image tests are slow; tests that need root or a tool skip with
    the reason, instead of failing obscurely.

    Under CI (CI=true) nothing is skipped: .ci/run installs every tool, and a
    missing one must turn the run red rather than hide a test.
    """
    for item in items:
        if any(item.get_closest_marker(m) for m in SLOW_MARKERS):
            item.add_marker(pytest.mark.slow)
    if os.environ.get("CI"):
        return
    for item in items:
        if item.get_closest_marker("udev") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="loop devices and udevd need root"))
        for tool in getattr(item.get_closest_marker("needs"), "args", ()):
            if not shutil.which(tool):
                item.add_marker(pytest.mark.skip(reason=f"{tool} is not installed (.ci/run installs it)"))
