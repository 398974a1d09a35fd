"""Everything llamactl imports when it loads is a declared dependency, not something a backend brought along.

The test venv holds vLLM, mlx-lm and the test tools, which pull in dozens of
packages: an import that only works because one of them is installed breaks
``pip install llamactl`` on a fresh machine (it did, for prometheus_client,
which vLLM depends on). Imports inside functions are the optional ones
(nvidia-ml-py), and those under ``if TYPE_CHECKING`` never run.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llamactl"


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = (re.match(r"[A-Za-z0-9_.-]+", requirement) for requirement in project["dependencies"])
    return {_normal(name.group()) for name in names if name is not None}


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _module_level_imports(tree: ast.Module) -> Iterator[str]:
    """Top-level modules imported when the file loads: its body and the try blocks in it."""
    statements: list[ast.stmt] = list(tree.body)
    while statements:
        statement = statements.pop()
        if isinstance(statement, ast.Import):
            yield from (alias.name.partition(".")[0] for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
            yield statement.module.partition(".")[0]
        elif isinstance(statement, ast.Try):
            statements += [*statement.body, *statement.orelse, *statement.finalbody]


def test_every_module_level_import_of_llamactl_is_a_declared_dependency() -> None:
    declared = _declared()
    distributions = importlib.metadata.packages_distributions()
    undeclared: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if module in sys.stdlib_module_names or module in {"llamactl", "__future__"}:
                continue
            providers = {_normal(name) for name in distributions.get(module, [module])}
            if not providers & declared:
                undeclared.setdefault(module, str(path.relative_to(ROOT)))
    assert undeclared == {}, f"imported but not in [project].dependencies: {undeclared}"


def test_the_check_sees_a_module_level_import_and_skips_a_function_level_one() -> None:
    source = "import a.b\ntry:\n    from c import d\nexcept ImportError:\n    pass\ndef f():\n    import e\n"
    tree = ast.parse(source)
    assert sorted(_module_level_imports(tree)) == ["a", "c"]
