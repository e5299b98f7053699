"""The layout as the code has it: imports point workers -> pipeline -> models, models/ does no
I/O and knows no service, no module imports itself through a circle, and the job options load
without torch. Read from the source with `ast`, nothing imported; lazy imports inside functions
count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "pipeline", "workers")
LAYER = {name: rank for rank, name in enumerate(PACKAGES)}  # may import only lower or equal
NOT_IN_MODELS = ("celery", "redis", "kombu", "fastapi", "uvicorn", "soundfile", "librosa")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports: ours resolved to the module file, others by top name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _ours(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: {m for m in deps if m in MODULES and m != name} for name, deps in graph.items()}


def test_imports_point_workers_to_pipeline_to_models():
    against = [f"{name} imports {dep}" for name, deps in _ours(GRAPH).items() for dep in deps
               if LAYER[dep.split(".")[0]] > LAYER[name.split(".")[0]]]
    assert not against, "imports against workers -> pipeline -> models:\n" + "\n".join(against)


def test_models_do_no_io_and_know_no_service():
    bad = [f"{name} imports {dep}" for name, deps in GRAPH.items() if name.startswith("models")
           for dep in deps if dep.split(".")[0] in NOT_IN_MODELS]
    assert not bad, "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle(_ours(GRAPH))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_job_options_load_without_torch():
    code = ("import sys, pipeline.inference.options, pipeline.cli.options; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
