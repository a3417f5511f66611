"""Structure figures of the package, measured from its source: rerun after any redesign.

    python tests/tools/structure.py

Prints:
- the road: files of the training command's import closure in which the whole composed config
  (a parameter annotated ``DictConfig``) enters a function; the orchestrator should be the last;
- what ``resomap report`` loads: the ``resomap.run`` modules in the import closure (imports
  inside functions included) of ``resomap.report``;
- the largest files and functions, and how many exceed 400 and 60 lines.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "resomap"
FILE_LIMIT, FUNCTION_LIMIT = 400, 60


def module_path(name: str) -> Path | None:
    """The source file of project module ``name`` (None outside the package)."""
    parts = name.split(".")
    if parts[0] != "resomap":
        return None
    base = PACKAGE.parent.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if module_path(name) is not None}


def closure(start: str) -> set[str]:
    """Every project module reachable from ``start`` through imports."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        path = module_path(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        todo.extend(imports(path))
    return {str(module_path(name).relative_to(PACKAGE.parent)) for name in seen}


def takes_config(path: Path) -> bool:
    """Whether a function in ``path`` receives the whole composed config."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                if arg.annotation is not None and "DictConfig" in ast.unparse(arg.annotation):
                    return True
    return False


def functions() -> list[tuple[int, str]]:
    """(lines, file:function) for every function in the package."""
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                rows.append((node.end_lineno - node.lineno + 1,
                             f"{path.relative_to(PACKAGE.parent)}:{node.name}"))
    return sorted(rows, reverse=True)


def files() -> list[tuple[int, str]]:
    """(lines, file) for every module of the package."""
    return sorted(((len(path.read_text().splitlines()), str(path.relative_to(PACKAGE.parent)))
                   for path in PACKAGE.rglob("*.py")), reverse=True)


def main() -> int:
    road = sorted(name for name in closure("resomap.train")
                  if takes_config(PACKAGE.parent / name))
    print(f"road: {len(road)} files receive the whole config: {', '.join(road)}")
    report_run = sorted(name for name in closure("resomap.report") if name.startswith("resomap/run/"))
    print(f"resomap report loads {len(closure('resomap.report'))} project modules; "
          f"of resomap/run: {', '.join(report_run) or 'none'}")
    sizes, lengths = files(), functions()
    print(f"files: {len(sizes)}, {sum(n for n, _ in sizes)} lines; above {FILE_LIMIT}: "
          f"{sum(n > FILE_LIMIT for n, _ in sizes)}; largest: "
          + ", ".join(f"{name} {n}" for n, name in sizes[:5]))
    print(f"functions above {FUNCTION_LIMIT} lines: {sum(n > FUNCTION_LIMIT for n, _ in lengths)}; "
          "largest: " + ", ".join(f"{name} {n}" for n, name in lengths[:5]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
