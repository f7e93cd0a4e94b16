"""The apply transaction: the ordered steps that convert a target.

The same steps run against a recording (dry-run) :class:`~tui.host.Host` to
produce the list of files and commands that ``tmpfs-root plan`` prints, and
against a real one for ``apply``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable

from tui import bootloader, dracut
from tui.devices import BlockDevice
from tui.host import Host, LineCallback
from tui.plan import Plan, Resolved, resolve

STATE_DIR = "/etc/tmpfs-root"
PLAN_FILE = f"{STATE_DIR}/plan.toml"
STATE_FILE = f"{STATE_DIR}/state.json"


@dataclass
class Step:
    name: str
    action: Callable[[], None]


def apply_steps(plan: Plan, host: Host, devices: list[BlockDevice] | None = None,
                on_line: LineCallback | None = None) -> tuple[Resolved, list[Step]]:
    """The steps of ``apply``, in order, bound to *host*."""
    resolved = resolve(plan, host, devices)
    steps = [Step("install the dracut module", lambda: dracut.install_module(host))]
    for kver in resolved.kernels:
        steps.append(Step(f"build the initramfs for {kver}",
                          lambda k=kver: dracut.build_initramfs(host, plan, k, resolved.initrds[k],
                                                                devices, on_line)))
    steps.append(Step("write the GRUB entry", lambda: bootloader.write_entry(
        host, resolved.title, resolved.cmdline)))
    steps.append(Step("regenerate the GRUB configuration", lambda: bootloader.regenerate(host, on_line)))
    if plan.boot == "once":
        steps.append(Step("boot the entry once on the next reboot",
                          lambda: bootloader.set_boot_once(host, resolved.kernels[-1], on_line)))
    steps.append(Step("record the state", lambda: record_state(host, plan)))
    return resolved, steps


def record_state(host: Host, plan: Plan) -> None:
    files = {}
    for action in host.actions:
        if action.kind == "write" and action.path:
            try:
                data = host.read_bytes(action.path)
            except OSError:
                continue
            files[action.path] = hashlib.sha256(data).hexdigest()
    host.write_file(PLAN_FILE, plan.to_toml())
    host.write_file(STATE_FILE, json.dumps({"files": files}, indent=2, sort_keys=True) + "\n")


def record(plan: Plan, host: Host, devices: list[BlockDevice] | None = None) -> Resolved:
    """Run every step on a dry-run *host*; its actions are then the plan's files and commands."""
    assert host.dry_run
    resolved, steps = apply_steps(plan, host, devices)
    for step in steps:
        step.action()
    return resolved
