"""The import graph of `dlss_dist` and `beam_jobs`: no circles, imports pointing down the floors
DESIGN.md names, and no hidden (function-level) imports of the packages' own modules outside
the CLIs, which import lazily so `--help` stays fast, `serving.loading`, which imports a
model's runtime only when that model is loaded (so the ONNX and TFLite paths never import
TensorFlow), the demo, which starts the Beam job only when it runs it, and the Beam job's
package, which re-exports its entry points lazily.

The floors, bottom up: the ground floor (`GROUND`: file plumbing, imaging, the model-directory
and pictures contracts, the export names); `data/`, `degradations`, `models/`, `export` and
`checkpoints` above it; training, serving and evaluation above models; `upscale` and the demo
above serving; `cli/` at the top. `beam_jobs/` stands beside training: it may use the ground
floor, the dataset schema and the console (`BEAM_MAY_IMPORT`), nothing higher; its command
line (`BEAM_CLI`) runs on the shared tool shell, `dlss_dist.cli`, as every tool does.
"""

from __future__ import annotations

import ast
import os

PACKAGE = "dlss_dist"
PACKAGES = (PACKAGE, "beam_jobs")
# Modules allowed to import package modules inside functions (see the module docstring).
LAZY_IMPORTERS = (
    f"{PACKAGE}.cli",
    f"{PACKAGE}.serving.loading",
    f"{PACKAGE}.demo",
    "beam_jobs.images_to_tfrecords.cli",
)
# Package __init__s whose module-level __getattr__ re-exports submodules lazily (PEP 562), so
# importing one submodule does not import the whole job; exact names, not their submodules.
LAZY_REEXPORTS = {"beam_jobs.images_to_tfrecords"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, PACKAGE)

# The ground floor: these import nothing of either package but each other.
GROUND = {
    PACKAGE,
    f"{PACKAGE}.files",
    f"{PACKAGE}.imaging",
    f"{PACKAGE}.model_dir",
    f"{PACKAGE}.pictures",
    f"{PACKAGE}.export_formats",
    f"{PACKAGE}.progress",
}
# What the Beam job may import of dlss_dist: the ground floor, the dataset's schema and TFRecord
# framing, the run lock on its output folder, and the tool shell (quiet logs, one-line errors).
BEAM_MAY_IMPORT = GROUND | {
    f"{PACKAGE}.data",
    f"{PACKAGE}.data.schema",
    f"{PACKAGE}.run_lock",
    f"{PACKAGE}.console",
}
# dlss-preprocess: on the shared tool shell (run_tool, shared_flags) like every dlss tool.
BEAM_CLI = {"beam_jobs.images_to_tfrecords.cli", "beam_jobs.images_to_tfrecords.__main__"}
BEAM_CLI_MAY_IMPORT = BEAM_MAY_IMPORT | {f"{PACKAGE}.cli", f"{PACKAGE}.cli.shared_flags"}


def _module_name(path: str) -> str:
    relative = os.path.relpath(path, REPO)[: -len(".py")]
    parts = relative.split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(REPO, package)):
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
        if name.split(".")[0] not in PACKAGES:
            continue
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            if ".".join(parts[:end]) in modules:
                targets.add(".".join(parts[:end]))
    return sorted(targets)


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> package modules it imports, function-level imports outside LAZY_IMPORTERS)."""
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
            if nested and not name.startswith(LAZY_IMPORTERS) and name not in LAZY_REEXPORTS:
                hidden.append(f"{name} (line {node.lineno}): {', '.join(targets)}")
    return graph, hidden


def _under(graph: dict[str, set[str]], prefix: str) -> set[str]:
    """The modules of `prefix` (a package or module name) and everything below it."""
    return {m for m in graph if m == prefix or m.startswith(prefix + ".")}


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
    assert "dlss_dist.data.schema" in graph["beam_jobs.images_to_tfrecords.shards"]
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
    # The file plumbing imports nothing of the package; the rest of the ground floor only it.
    assert graph["dlss_dist.files"] == set()
    for module in GROUND:
        assert graph[module] <= GROUND, (module, graph[module] - GROUND)
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


def test_the_floors_above_the_ground_point_down():
    graph, _ = import_graph()
    training = _under(graph, "dlss_dist.training")
    serving = _under(graph, "dlss_dist.serving")
    evaluation = _under(graph, "dlss_dist.evaluation")
    cli = _under(graph, "dlss_dist.cli")
    tools = {"dlss_dist.upscale", "dlss_dist.video", "dlss_dist.demo"}
    beam = _under(graph, "beam_jobs")

    def imports(modules: set[str]) -> set[str]:
        return set().union(*(graph[m] for m in modules))

    # The checkpoint reader sits between models and everything that loads a generator.
    assert not graph["dlss_dist.checkpoints"] & (training | serving | evaluation | cli | tools)
    # models/ builds networks from the ground floor (and its weights' cache) only.
    models = _under(graph, "dlss_dist.models")
    assert imports(models) <= GROUND | models | {"dlss_dist.pretrained"}
    # Training, serving and evaluation read the model directory and draw pictures through the
    # ground floor, never through one another's modules (upscale.py and serving once reached
    # up into training/model_dir and evaluation/pictures).
    assert not imports(serving) & (training | evaluation | cli | tools)
    assert not imports(training) & (serving | cli | tools)
    assert not imports(evaluation) & (training | cli)
    assert not graph["dlss_dist.upscale"] & (training | evaluation | cli)
    # Nothing imports a CLI but the CLIs.
    outside_cli = set(graph) - cli - BEAM_CLI
    assert not imports(outside_cli - beam) & cli
    assert not imports(beam - BEAM_CLI) & cli
    # The Beam job uses dlss_dist's bottom floors only (its command line the tool shell too);
    # only the demo (which runs it) and the job's own modules import it.
    assert {m for m in imports(beam - BEAM_CLI) if m.startswith("dlss_dist")} <= BEAM_MAY_IMPORT
    assert {m for m in imports(BEAM_CLI) if m.startswith("dlss_dist")} <= BEAM_CLI_MAY_IMPORT
    importers_of_beam = {m for m in graph if graph[m] & beam} - beam
    assert importers_of_beam <= {"dlss_dist.demo"}, importers_of_beam
