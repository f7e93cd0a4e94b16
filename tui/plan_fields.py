"""Each plan field declared once: its command-line option, metavar, help, an example, the
type its plan-file key holds, and the TUI's label and placeholder for it.

The command line builds the plan options from :data:`FIELDS` (tui/cli.py), the plan file's
loader checks types with it (tui/plan.py), problems name the option it gives
(tui/validation.py), the screens take their labels from it (through tui.engine), and
docs/options.md is rendered from it::

    python3 -m tui.plan_fields > docs/options.md

It imports nothing of the engine: every part of it may read the table.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

#: What a plan file's key holds, in the words its error says ("'kernels' must be …").
STRING = "a string"
STRINGS = "a list of strings"
BOOLEAN = "true or false"


@dataclass(frozen=True)
class PlanField:
    name: str  #: the Plan attribute, and the plan file's key
    option: str  #: the command-line option that sets it
    metavar: str | None  #: None: a switch without a value
    help: str  #: what it is, as --help says it (a literal %, never %%)
    example: str | list[str] | bool  #: a valid value, as the plan holds it
    toml: str  #: STRING, STRINGS or BOOLEAN
    label: str = ""  #: the TUI's label for its widget ("": no labelled widget)
    placeholder: str = ""  #: the TUI's placeholder for its input ("": none)

    def accepts(self, value: object) -> bool:
        """Whether *value* (as tomllib read it) has the type the plan file's key holds."""
        if self.toml == STRINGS:
            return isinstance(value, list) and all(isinstance(v, str) for v in value)
        if self.toml == BOOLEAN:
            return isinstance(value, bool)
        return isinstance(value, str)

    def argparse_kwargs(self) -> dict:
        """What ``add_argument(self.option, **…)`` takes."""
        kwargs: dict = {"dest": self.name, "help": self.help.replace("%", "%%")}
        if self.toml == BOOLEAN:  # a switch that turns the default (true) off; None: not given
            return kwargs | {"action": "store_false", "default": None}
        kwargs["metavar"] = self.metavar
        if self.toml == STRINGS:
            kwargs["action"] = "append"
        return kwargs

    def cli_words(self, value: str | list[str] | bool | None = None) -> list[str]:
        """The command-line words that set *value* (the example by default)."""
        value = self.example if value is None else value
        if isinstance(value, bool):
            return [self.option] if not value else []
        if isinstance(value, list):
            return [w for v in value for w in (self.option, v)]
        return [self.option, value]

    def toml_line(self, value: str | list[str] | bool | None = None) -> str:
        """``key = value`` as a plan file holds *value* (the example by default)."""
        return f"{self.name} = {toml_value(self.example if value is None else value)}"


FIELDS: tuple[PlanField, ...] = (
    PlanField(
        "source",
        "--source",
        "SRC",
        "the volume holding the image: /dev/vda1, LABEL=IMGVOL, UUID=…, PARTUUID=…, "
        "PARTLABEL=…, /dev/mapper/vg-lv, nfs:server:/export[,opts] / nfs4:…, or a web "
        "server: http://server[:port]/dir (the image must be pinned with --sha256) or https://…",
        "LABEL=IMGVOL",
        STRING,
    ),
    PlanField(
        "image",
        "--image",
        "PATH",
        "archive path relative to the source's root, e.g. images/rootfs.tar.zst",
        "images/rootfs.tar.zst",
        STRING,
        label="Image path",
        placeholder="e.g. images/rootfs.tar.zst (on the source volume)",
    ),
    PlanField(
        "size",
        "--size",
        "SIZE",
        "tmpfs size as tmpfs takes it: 2G, 1536m, 50% (default: decided at boot from the image's size and the RAM)",
        "2G",
        STRING,
        label="tmpfs size",
        placeholder="e.g. 2G, 1536m, 50% (empty: decided at boot)",
    ),
    PlanField(
        "kernels",
        "--kernel",
        "KVER",
        "kernel version to build for, repeatable (default: the running kernel if "
        "installed in the target, else the newest), e.g. --kernel 6.1.0-50-amd64",
        ["6.1.0-50-amd64"],
        STRINGS,
        label="Kernels to build a tmpfs-root initramfs for",
    ),
    PlanField(
        "title",
        "--title",
        "T",
        "boot entry title (default: the OS name + 'root in RAM (tmpfs-root)')",
        "Debian, root in RAM",
        STRING,
        label="Entry title",
        placeholder="default: {default}",  # the target's default title
    ),
    PlanField(
        "boot",
        "--boot",
        "MODE",
        "once (default): boot the entry on the next reboot only, falling back to "
        "the normal entry on failure; menu: only add the entry; default: make it "
        "the default entry",
        "menu",
        STRING,
    ),
    PlanField(
        "append",
        "--append",
        "ARGS",
        "extra kernel arguments, e.g. --append 'console=ttyS0 quiet'",
        "console=ttyS0 quiet",
        STRING,
        label="Extra args",
        placeholder="e.g. console=ttyS0 quiet",
    ),
    PlanField(
        "network",
        "--ip",
        "CONF",
        "network for an NFS or http(s) source (kernel ip=): dhcp (default) or client:server:gw:netmask:host:iface:none",
        "dhcp",
        STRING,
        label="Network (ip=)",
        placeholder="empty: dhcp; or client:server:gw:netmask:host:iface:none",
    ),
    PlanField(
        "sha256",
        "--sha256",
        "HEX",
        "refuse to boot unless the image has this pin: what image create wrote in FILE.pin "
        "(a sharded image's is the sha256 of its index, not sha256sum's)",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        STRING,
        label="sha256",
        placeholder="e.g. 9f86d0… (`tmpfs-root image inspect FILE --sha256` on the server)",
    ),
    PlanField(
        "tmpfs_opts",
        "--tmpfs-opts",
        "OPTS",
        "extra tmpfs options (mpol=, nr_inodes=, huge=within_size|advise|never), e.g. mpol=interleave",
        "mpol=interleave",
        STRING,
    ),
    PlanField(
        "hostonly",
        "--no-hostonly",
        None,
        "build a generic initramfs (dracut -N) instead of a host-only one",
        False,
        BOOLEAN,
    ),
)

_BY_NAME = {f.name: f for f in FIELDS}


def plan_field(name: str) -> PlanField:
    """The field of that name (KeyError for a name that is not one)."""
    return _BY_NAME[name]


# ------------------------------------------------------------------- TOML
def toml_value(value: str | list[str] | bool) -> str:
    """*value* as a plan file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_string(v) for v in value) + "]"
    return toml_string(str(value))


def toml_string(s: str) -> str:
    """A TOML basic string: quotes and backslashes escaped, control characters as \\uXXXX."""
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# ------------------------------------------------------------------- docs
def _cell(text: str) -> str:
    """Text for a Markdown table cell: a | would end the cell."""
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def markdown() -> str:
    """docs/options.md: the plan options as a Markdown table."""
    lines = [
        "# Plan options",
        "",
        "<!-- Generated from tui/plan_fields.py by `python3 -m tui.plan_fields > docs/options.md`;",
        "     edit the table there, not here (a test checks the two agree). -->",
        "",
        "`tmpfs-root plan` and `tmpfs-root apply` take these options; a plan file",
        "(`plan --save FILE`, then `--plan FILE`) holds the same fields as TOML keys, and an",
        "option given beside `--plan` wins over the file's key. The TUI column names the field",
        "the screens show it in (empty: the TUI chooses it another way, or not at all).",
        "",
        "| Option | Plan file key | Example | Meaning | TUI |",
        "|---|---|---|---|---|",
    ]
    for f in FIELDS:
        option = f"{f.option} {f.metavar}" if f.metavar else f.option
        key = f"{_code(f.name)} ({f.toml})"
        example = f"{_code(shlex.join(f.cli_words()))}<br>{_code(f.toml_line())}"
        lines.append("| " + " | ".join(_cell(c) for c in (_code(option), key, example, f.help, f.label)) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
