"""The folders are the architecture: imports run one way between the parts.

cli → job → {transports, store} → search; analysis reads the store (never the job); the
search imports no transport, store, file, clock or MPI. Read from the source with ``ast``, so
a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "evo_engine"

# part -> the parts of evo_engine it may import (itself always allowed). The top-level
# modules (space, scenario, context, optimizer, errors) are the public vocabulary.
ALLOWED = {
    "util": set(),
    "search": {"space", "errors"},
    "store": {"search", "space", "errors", "util"},
    "transports": {"search", "space", "errors", "context", "scenario"},
    "sciml": {"errors", "context"},
    "analysis": {"store", "search", "space", "errors", "util"},
    "job": {"store", "search", "transports", "space", "scenario", "errors", "util", "context",
            "__init__"},
    "cli": {"job", "store", "analysis", "errors", "util", "__init__"},
}
# Standard-library modules that would give the search a file, a clock, a process or MPI.
FORBIDDEN_IN_SEARCH = {"os", "time", "pathlib", "threading", "subprocess", "signal", "zarr",
                       "mpi4py", "socket", "shutil"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "evo_engine":  # a submodule, or a name of the package itself
                names += [f"evo_engine.{a.name}" if _is_module(a.name) else "evo_engine"
                          for a in node.names]
            else:
                names.append(node.module)
    return names


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def _part_of(module: str) -> str | None:
    """'evo_engine.store.writer' -> 'store'; 'evo_engine.space' -> 'space'."""
    parts = module.split(".")
    if parts[0] != "evo_engine":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _sources(part: str) -> list[Path]:
    return sorted((PACKAGE / part).rglob("*.py"))


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_a_part_imports_only_the_parts_below_it(part: str) -> None:
    assert _sources(part), f"evo_engine/{part}/ is empty"
    wrong = []
    for path in _sources(part):
        for module in _imports(path):
            other = _part_of(module)
            if other is not None and other != part and other not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_search_has_no_file_clock_process_or_mpi() -> None:
    wrong = [f"{p.relative_to(PACKAGE)} imports {m}" for p in _sources("search")
             for m in _imports(p) if m.split(".")[0] in FORBIDDEN_IN_SEARCH]
    assert not wrong, "\n".join(wrong)


def test_only_the_mpi_transport_imports_mpi4py() -> None:
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if any(m.split(".")[0] == "mpi4py" for m in _imports(p)))
    assert users == ["transports/mpi.py"]


def test_no_module_is_left_at_the_top_but_the_public_vocabulary() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "context.py", "errors.py", "optimizer.py",
                   "scenario.py", "space.py"]
