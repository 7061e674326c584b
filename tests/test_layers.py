"""The package's layers: every module imports only from modules below it (README, "How it works").

Read from the source with `ast`, lazy imports inside functions included, so no import cycle can
come back and no low module can start reaching up (say, the trial code into the sweep runner).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store

# Lowest first; a module may import any module on an earlier line (and its own package's __init__).
LAYERS = [
    "names", "errors", "processes", "measure", "schema", "config", "search",
    "datasets", "keras_compat", "models", "training", "multifit", "batched", "replicate", "objective",
    "compression.layers", "compression.artifact", "compression.packing", "compression.qpack", "compression.export",
    "compression.prune", "compression.shrink", "compression.quantize", "compression.cluster", "compression.distill", "compression.pipeline",
    "store", "tracking", "ledger", "budget", "compression.base", "runner", "worker", "sweep",
    "progress", "listing", "serve", "report.stats", "report.seeds", "report.decompose", "report.regimes", "report.tables", "report.verdicts", "report.fronts", "report.forgetting", "report.compressed", "report.load",
    "report.sections", "report.figures", "report.page", "report.render", "report.build", "decide",
    "frames", "cli", "__main__",
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "study").rglob("*.py"):
        parts = path.relative_to(ROOT / "study").with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The study modules `name` imports, anywhere in its source."""
    known = _modules()
    package = name.rsplit(".", 1)[0] if "." in name else ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                module = ".".join([*filter(None, base), *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("study"):
                module = node.module.removeprefix("study").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}".lstrip(".")
                found.add(candidate if candidate in known else module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("study."):
                    found.add(alias.name.removeprefix("study."))
    return {m for m in found if m in known and m != name}


def test_every_module_has_a_layer():
    assert set(_modules()) == set(LAYERS), "add the new module to LAYERS (and to the README's tree)"


def test_no_module_imports_from_a_layer_above_it():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{name} imports {other}"
        for name, path in _modules().items()
        for other in sorted(_imports(name, path))
        if rank[other] > rank[name]
    ]
    assert not upward, "; ".join(upward)


def test_the_readme_tree_names_every_module_below_what_imports_it():
    readme = (ROOT / "README.md").read_text()
    tree = readme[readme.index("## How it works"):]
    tree = tree[tree.index("```") : tree.index("```", tree.index("```") + 3)]

    def where(name: str) -> int:  # a module's first mention: compression/base.py is named in full
        file = "compression/base.py" if name == "compression.base" else Path(name.replace(".", "/")).name + ".py"
        return tree.find(file)

    missing = [name for name in LAYERS[:-1] if where(name) < 0]  # all but __main__
    assert not missing, f"README's 'How it works' does not name {missing}"
    upward = [f"{name} imports {other}" for name, path in _modules().items() if name != "__main__"
              for other in _imports(name, path) if where(other) > where(name)]
    assert not upward, "README lists these below what they import: " + "; ".join(upward)


# Third-party libraries with a notice of their end that only one module may touch, so that the
# switch to a successor is one change: the LiteRT quantizer's int4 writer.
CONFINED = {"ai_edge_quantizer": "compression.export"}


def test_a_library_with_an_end_of_life_notice_is_used_by_one_module():
    for library, owner in CONFINED.items():
        users = sorted(
            name for name, path in _modules().items()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            and any(n.split(".")[0] == library for n in ([node.module or ""] if isinstance(node, ast.ImportFrom)
                                                        else [a.name for a in node.names]))
        )
        assert users == [owner], f"{library} is imported by {users}; keep it behind {owner}"
