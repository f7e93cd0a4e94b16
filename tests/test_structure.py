"""The boundaries a reader relies on, checked by machine: the engine (tui/) imports no
Textual, the screens talk to the engine only through its façade (tui.engine), no module
imports itself back through others (at any depth of its code: a lazy import inside a
function closes a circle too), and the layering contract in pyproject.toml holds
(import-linter's lint-imports, also run by .ci/run)."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.infra import REPO

ENGINE = sorted(p for p in (REPO / "tui").glob("*.py") if p.name != "__main__.py")
SCREENS = sorted((REPO / "screens").glob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_engine_module_imports_without_textual():
    """Import each engine module with textual (and rich's live display) made unimportable."""
    modules = [f"tui.{p.stem}" for p in ENGINE if p.stem != "__init__"]
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'textual' or name.startswith('textual.'):\n"
        "            raise ImportError('textual is not for the engine: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    __import__(m)\n"
        "print(len([m for m in sys.modules if m.startswith('tui.')]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= len(modules)


def test_no_engine_module_names_textual():
    for path in ENGINE:
        assert not [m for m in imported(path) if m.split(".")[0] == "textual"], path


def test_screens_use_the_engine_only_through_its_facade():
    for path in SCREENS:
        engine_modules = {m for m in imported(path) if m == "tui" or m.startswith("tui.")}
        assert engine_modules <= {"tui.engine"}, f"{path.name} imports {sorted(engine_modules)}"


def test_every_step_has_its_screen_and_the_first_screen_waits_for_no_engine_module():
    """The step names are the keys of the lazy screen table, each gives the screen of that
    name; importing the first screen's modules imports no engine module but the errors (the
    engine comes in the Overview's worker, after the first frame)."""
    code = (
        "import sys\n"
        "from screens.app import step_screen\n"
        "from screens.steps import STEP_NAMES\n"
        "import screens.overview\n"
        "print(sorted(m for m in sys.modules if m.startswith('tui.')))\n"
        "print(all(step_screen(n).NAME == n for n in STEP_NAMES))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    loaded, names_match = r.stdout.splitlines()
    assert names_match == "True"
    assert "tui.engine" not in loaded and "tui.transaction" not in loaded, loaded


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports when it runs, at any depth of its code (`from
    tui import x` names tui.x); what only a type checker reads (under `if TYPE_CHECKING:`)
    is left out: it runs nothing."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names & known


def module_graph() -> dict[str, set[str]]:
    files = {f"{p.parent.name}.{p.stem}": p for p in [*ENGINE, *SCREENS] if p.stem != "__init__"}
    return {name: runtime_imports(path, set(files)) - {name} for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_back_through_others():
    assert circles(module_graph()) == []


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_engines_parts_never_import_the_layers_above_them():
    """Below the façade (tui.engine) and the transaction, no part reaches up to them or to
    the CLI: the layers contract in pyproject.toml names only the upper layers."""
    upper = {"tui.cli", "tui.__main__", "tui.engine", "tui.transaction"}
    graph = module_graph()
    for name, imports in graph.items():
        allowed = {"tui.cli": upper, "tui.__main__": upper, "tui.engine": {"tui.transaction"}}.get(name, set())
        if name.startswith("screens."):
            allowed = {"tui.engine"}
        assert imports & upper <= allowed, f"{name} imports {sorted(imports & upper - allowed)}"


def test_the_layering_contract_holds():
    import shutil

    lint = shutil.which("lint-imports")
    assert lint, "import-linter is in the test extra: pip install -e '.[test]'"
    r = subprocess.run([lint], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "0 broken" in r.stdout


def test_the_quick_tier_starts_no_udevd_and_the_slow_tier_does():
    from tests.conftest import may_select_udev_tests

    assert not may_select_udev_tests("not slow")
    assert not may_select_udev_tests("not slow and not chroot")
    assert may_select_udev_tests("slow") and may_select_udev_tests("qemu") and may_select_udev_tests("udev")
    assert may_select_udev_tests("") and may_select_udev_tests("slow and not qemu")
