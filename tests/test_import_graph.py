"""The package's import graph: no circles, and no hidden (function-level) imports of its own
modules outside the CLIs, which import lazily so `--help` stays fast, and outside
`serving.loading`, which imports a model's runtime only when that model is loaded (so the ONNX
and TFLite paths never import TensorFlow)."""

from __future__ import annotations

import ast
import os

PACKAGE = "dlss_dist"
# Modules allowed to import package modules inside functions (see the module docstring).
LAZY_IMPORTERS = (f"{PACKAGE}.cli", f"{PACKAGE}.serving.loading")
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")]
    parts = relative.split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[_module_name(path)] = path
    return found


def _targets(node: ast.AST, modules: dict[str, str]) -> list[str]:
    """The package modules an import statement loads (parents included)."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from a.b import c` loads a.b, and a.b.c when c is a submodule.
        names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    targets = set()
    for name in names:
        if name.split(".")[0] != PACKAGE:
            continue
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            if ".".join(parts[:end]) in modules:
                targets.add(".".join(parts[:end]))
    return sorted(targets)


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> package modules it imports, function-level imports outside cli/)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    hidden = []
    for name, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            targets = _targets(node, modules)
            if not targets:
                continue
            # A submodule's own parent packages are loaded before it anyway; not an edge.
            graph[name].update(t for t in targets if t != name and not name.startswith(t + "."))
            nested = id(node) not in top_level
            if nested and not name.startswith(LAZY_IMPORTERS):
                hidden.append(f"{name} (line {node.lineno}): {', '.join(targets)}")
    return graph, hidden


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_circle():
    graph, _ = import_graph()
    assert len(graph) > 20
    assert "dlss_dist.serving" in graph["dlss_dist.upscale"]
    assert find_cycle(graph) is None


def test_only_clis_import_package_modules_inside_functions():
    _, hidden = import_graph()
    assert hidden == []


def test_imports_point_down_where_the_design_says():
    graph, _ = import_graph()
    # export.py sits just above models/ (and the uint8 <-> [-1, 1] mapping).
    assert graph["dlss_dist.export"] <= {
        "dlss_dist",
        "dlss_dist.data",
        "dlss_dist.data.pipeline",
        "dlss_dist.serving_decode",
    }
    # The file plumbing imports nothing of the package; pictures only the ground floor; the
    # model-directory contract nothing above it.
    assert graph["dlss_dist.files"] == set()
    assert graph["dlss_dist.evaluation.pictures"] <= {"dlss_dist", "dlss_dist.files"}
    above_model_dir = {"dlss_dist.training.loop", "dlss_dist.upscale", "dlss_dist.demo"}
    assert not graph["dlss_dist.training.model_dir"] & above_model_dir
    # Upscaling files no longer reaches into training for the model directory: serving does.
    assert not {m for m in graph["dlss_dist.upscale"] if m.startswith("dlss_dist.training")}
    # The TensorFlow-free modules (the inference-only install) import only TensorFlow-free ones.
    tensorflow_free = {
        "dlss_dist.files",
        "dlss_dist.export_formats",
        "dlss_dist.serving",
        "dlss_dist.serving.loading",
        "dlss_dist.serving.memory",
        "dlss_dist.serving.starters",
        "dlss_dist.serving.tiling",
        "dlss_dist.serving.upscaler",
        "dlss_dist.serving.onnx_file",
        "dlss_dist.serving.tflite_file",
    }
    for module in tensorflow_free:
        # loading's one TensorFlow import happens inside load_runtime, for TensorFlow formats.
        lazy = {"dlss_dist.serving.tensorflow_models"} if module.endswith(".loading") else set()
        assert graph[module] <= tensorflow_free | lazy | {"dlss_dist"}, module
