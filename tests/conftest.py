"""Shared fixtures; the heavy machinery (disk images, loop devices, udevd, the
Debian target, QEMU) lives in tests/infra.py."""

import os
import shutil

import pytest

from tests.infra import make_fake_target


@pytest.fixture
def fake_target(tmp_path):
    """A directory the engine takes for an installed Debian system (kernel, dracut, GRUB)."""
    return make_fake_target(tmp_path / "target")


def pytest_collection_modifyitems(config, items):
    """Tests that need root or a tool skip with the reason, instead of failing obscurely.

    Under CI (CI=true) nothing is skipped: .ci/run installs every tool, and a
    missing one must turn the run red rather than hide a test.
    """
    if os.environ.get("CI"):
        return
    for item in items:
        if item.get_closest_marker("udev") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="loop devices and udevd need root"))
        for tool in getattr(item.get_closest_marker("needs"), "args", ()):
            if not shutil.which(tool):
                item.add_marker(pytest.mark.skip(reason=f"{tool} is not installed (.ci/run installs it)"))
