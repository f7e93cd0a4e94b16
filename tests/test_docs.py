"""The docs and the code held together: every console line the dracut module can print is
explained in docs/troubleshooting.md, every rd.tmpfs.* argument it reads is documented in
docs/cmdline.md (and every documented one is read), the man page is what its generator makes
from the argument parser and names every option, and every relative link in the README and
docs/ leads to a file that exists."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "tui/dracut/90tmpfs-root"
DOCS = REPO / "docs"


# --------------------------------------------------------------- the module's shell
def _logical_lines(text: str) -> list[tuple[int, str]]:
    """The shell text's lines, backslash-continued ones joined, each with its first line's number."""
    out: list[tuple[int, str]] = []
    joining = False
    for n, line in enumerate(text.splitlines(), 1):
        if joining:
            out[-1] = (out[-1][0], out[-1][1][:-1] + " " + line.strip())
        else:
            out.append((n, line))
        joining = line.endswith("\\")
    return out


def _skip_expansion(s: str, i: int) -> int:
    """*s[i]* is '$': the index just past the expansion ($name, $1, ${...}, $(...))."""
    if s.startswith("$(", i) or s.startswith("${", i):
        close = ")" if s[i + 1] == "(" else "}"
        depth, j = 1, i + 2
        while j < len(s) and depth:
            c = s[j]
            if c == "\\":
                j += 2
                continue
            if c == '"':
                j = _skip_dq(s, j)
                continue
            if c == "'" and close == ")":
                j = s.index("'", j + 1) + 1
                continue
            if c == "$":
                j = _skip_expansion(s, j)
                continue
            if c == s[i + 1]:
                depth += 1
            elif c == close:
                depth -= 1
            j += 1
        return j
    m = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|[0-9?#@*!$-])").match(s, i)
    return m.end() if m else i + 1


def _skip_dq(s: str, i: int) -> int:
    """*s[i]* opens a double-quoted word: the index just past its closing quote."""
    return _parse_dq(s, i)[0]


def _parse_dq(s: str, i: int) -> tuple[int, list[str]]:
    """Parse the double-quoted word opening at *s[i]*: (the index past it, its literal
    fragments, split where an expansion stands)."""
    fragments, cur, j = [], "", i + 1
    while j < len(s) and s[j] != '"':
        if s[j] == "\\" and j + 1 < len(s):
            cur += s[j + 1]
            j += 2
        elif s[j] == "$" and j + 1 < len(s) and re.match(r"[A-Za-z0-9_{(?#@*!$-]", s[j + 1]):
            fragments.append(cur)
            cur = ""
            j = _skip_expansion(s, j)
        else:
            cur += s[j]
            j += 1
    fragments.append(cur)
    return j + 1, fragments


def _quoted_words(line: str, start: int) -> tuple[list[list[str]], str]:
    """The double-quoted words from *start* on (separated by blanks), and what follows them."""
    words, i = [], start
    while True:
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == '"':
            i, fragments = _parse_dq(line, i)
            words.append(fragments)
        else:
            return words, line[i:]


#: how the module says something on the console: tr_fail (a failure: the line, the
#: parameter to fix, dracut's failure path), tr_say (progress and warnings), dracut-lib's warn, dwarn
#: at build time; and the reasons tr_fail prints, written into a `why` file by echo, by a
#: function whose output is sent there, or by the index reader's awk (its ERR line).
SAYERS = re.compile(r"(?<![\w-])(tr_fail|tr_say|dwarn|derror|warn|die|echo)\s+(?=\")")
TO_WHY = re.compile(r'>\s*"[^"]*why"')
FUNCTION = re.compile(r"^(\w+)\(\)\s*\{")


def _functions(lines: list[str]) -> dict[str, tuple[int, int]]:
    """Each function's name → its lines (the first, and the one past its closing brace)."""
    spans, name, start = {}, None, 0
    for n, line in enumerate(lines):
        m = FUNCTION.match(line)
        if m:
            name, start = m.group(1), n
        elif name and line.startswith("}"):
            spans[name] = (start, n + 1)
            name = None
    return spans


def module_messages() -> list[tuple[str, list[str]]]:
    """Every line the module can print, as (where, its literal fragments), each with the
    prefixes that are not part of the message (tmpfs-root:, a status code, ERR) removed."""
    out: list[tuple[str, list[str]]] = []
    for path in sorted(MODULE.glob("*.sh")):
        numbered = _logical_lines(path.read_text())
        lines = [line for _, line in numbered]
        spans = _functions(lines)
        # functions whose output is the reason for a failure: called with stdout into a why file
        reasons = {
            name
            for line in lines
            if TO_WHY.search(line)
            for name in spans
            if re.search(rf"(?<![\w-]){name}\b", line.split(">")[0]) and not FUNCTION.match(line)
        }
        reason_lines = {n for name in reasons for n in range(*spans[name])}
        for n, line in enumerate(lines):
            where = f"{path.name}:{numbered[n][0]}"
            for m in SAYERS.finditer(line):
                words, rest = _quoted_words(line, m.end())
                if not words:
                    continue
                fragments = list(words[0])  # echo joins its words with a blank
                for w in words[1:]:
                    fragments[-1] += " " + w[0]
                    fragments += w[1:]
                text = "".join(fragments)
                if m.group(1) == "echo" and not (
                    TO_WHY.match(rest.strip()) or n in reason_lines or text.startswith("ERR ")
                ):
                    continue
                out.append((where, fragments))
            for m in re.finditer(r'\b(?:err|bad)\s*=\s*(?:sprintf\()?"((?:[^"\\]|\\.)*)"', line):
                out.append((where, re.split(r"%[-.0-9]*[a-z]", m.group(1).replace('\\"', '"'))))
    for i, (where, fragments) in enumerate(out):
        first = re.sub(r"^(tmpfs-root: |ERR |[0-9]+ )", "", fragments[0])
        out[i] = (where, [first, *fragments[1:]])
    return out


def stable_text(fragments: list[str]) -> str | None:
    """A message's stable leading text: its first literal run of at least 8 characters
    (what comes before the first value it shows, or between values), trimmed; None for a
    line that only passes on another's words (tr_fail "$why")."""
    for f in fragments:
        f = " ".join(f.split()).lstrip(" ():;,'\"").rstrip(" (:;,'\"")
        if len(f) >= 8:
            return f
    return None


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_message_extraction_finds_the_kinds_of_line_the_module_prints():
    # what the extraction must find, so that it cannot silently find nothing: a tr_fail, a
    # tr_say, a reason echoed into a why file across two lines, a reason from a function
    # whose output goes there, the index reader's awk, and module-setup's dwarn
    found = {stable_text(f) for _, f in module_messages()}
    for expected in (
        "not found on",
        "waiting for the network (ip=, rd.neednet=1) to reach",
        "the server does not answer range requests, which a sharded image needs (serve it with one that does, "
        "or make the image with --shards 1)",
        "the tmpfs ran out of inodes: the image holds more files than the",
        "damaged index (no tmpfs-root-index 1 header)",
        "this initramfs cannot boot",
    ):
        assert expected in found, expected
    assert len(found) > 40


def test_every_console_line_of_the_module_is_in_troubleshooting():
    doc = _flat((DOCS / "troubleshooting.md").read_text())
    missing = sorted(
        {
            f"{where}: {text!r}"
            for where, fragments in module_messages()
            if (text := stable_text(fragments)) and text not in doc
        }
    )
    assert not missing, "not explained in docs/troubleshooting.md:\n" + "\n".join(missing)


def test_stable_text_trims_values_and_punctuation():
    assert stable_text(["", " not found on ", ""]) == "not found on"
    assert stable_text(["", " (", ") is verified whole in RAM "]) == "is verified whole in RAM"
    assert stable_text(["", " (", ")"]) is None
    _, fragments = _parse_dq('"tmpfs of $(tr_human "$bytes") is too small for $img (x)"', 0)
    assert fragments == ["tmpfs of ", " is too small for ", " (x)"]


# --------------------------------------------------------------- rd.tmpfs.* arguments
RD_TMPFS = re.compile(r"rd\.tmpfs\.[a-z0-9_.]*[a-z0-9_]")


def module_arguments() -> set[str]:
    """The rd.tmpfs.* arguments the module reads (dracut-lib's getarg and getargbool)."""
    names = set()
    for path in MODULE.glob("*.sh"):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            for m in re.finditer(r"\bgetarg(?:bool|s|num)?\s+(?:-[a-z]\s+)?(?:\S+\s+)*?(rd\.tmpfs\.[a-z0-9_.]+)", line):
                names.add(RD_TMPFS.match(m.group(1)).group(0))  # type: ignore[union-attr]
    return names


def test_every_rd_tmpfs_argument_read_is_documented_and_every_documented_one_is_read():
    read = module_arguments()
    assert {"rd.tmpfs.imgfile", "rd.tmpfs.insecure"} <= read  # the scan finds getarg and getargbool
    documented = set(RD_TMPFS.findall((DOCS / "cmdline.md").read_text()))
    assert read == documented, (
        f"read, not documented: {sorted(read - documented)}; documented, not read: {sorted(documented - read)}"
    )


# --------------------------------------------------------------- the man page
def _generator():
    spec = importlib.util.spec_from_file_location("man_generate", REPO / "man/generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_man_page_is_what_its_generator_makes_now():
    gen = _generator()
    assert (REPO / "man/tmpfs-root.8").read_text() == gen.render(), (
        "man/tmpfs-root.8 is out of date: run `python3 man/generate.py`"
    )


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_command_is_in_the_man_page():
    from tui.cli import build_parser

    # the page as text: roff's font changes and italic corrections out, its escaped hyphens plain
    page = re.sub(r"\\f[BIRP]|\\[,/]", "", (REPO / "man/tmpfs-root.8").read_text()).replace("\\-", "-")
    options = {s for p in _parsers(build_parser()) for a in p._actions for s in a.option_strings}
    assert "--tmpfs-opts" in options and "--shards" in options  # subcommands' options are seen
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", page))
    assert not missing, f"not in man/tmpfs-root.8: {missing}"


def test_the_package_installs_the_man_page():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'"share/man/man8"\s*=\s*\["man/tmpfs-root.8"\]', text)


# --------------------------------------------------------------- links, benchmarks
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file():
    pages = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
    assert len(pages) >= 10
    broken = [
        f"{page.relative_to(REPO)} → {target}"
        for page in pages
        for target in LINK.findall(page.read_text())
        if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists()
    ]
    assert not broken, broken


def test_the_benchmark_report_renders_the_result_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    row = {"method": "module, gz", "size_mb": 287.2, "pack_s": 14.4, "times": [3.73, 3.9], "peak_rss_mb": 18.2}
    rows = [
        dict(row, method="module, sharded zst (default, 24 shards, 2 cores)", best_s=1.0, median_s=1.2),
        dict(row, method="module, sharded zst, 1 core", best_s=1.77, median_s=3.85),
        dict(row, best_s=3.73, median_s=3.83),
        dict(row, method="original module: tar xpzf", pack_s=None, best_s=4.82, median_s=5.13),
        dict(row, method="floor: plain tar from page cache", pack_s=None, best_s=0.72, median_s=0.75),
    ]
    (results / "unpack.json").write_text(
        json.dumps({"tree": "/t", "tree_bytes": 793e6, "entries": 18062, "runs": 5, "cores": 2, "rows": rows})
    )
    doc = tmp_path / "benchmarks.md"
    doc.write_text((DOCS / "benchmarks.md").read_text())
    subprocess.run(
        [sys.executable, str(REPO / "bench/report.py"), "--results", str(results), "--write", str(doc)], check=True
    )
    text = doc.read_text()
    assert "| module, gz | 287 | 14.4 | 3.73 | 3.83 | 18 | 5.18× | 1.3× faster | – |" in text
    assert "793 MB, 18,062 entries" in text
    assert text != (DOCS / "benchmarks.md").read_text()


def test_the_readme_is_the_admins_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    first = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first and first.group(1).splitlines()[1].startswith("./.ci/run")
