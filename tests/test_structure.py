"""The boundaries a reader relies on, checked by machine: the engine (tui/) imports no
Textual, and the screens talk to the engine only through its façade (tui.engine)."""

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
