"""The package's import graph: no module imports one that imports it back (an import inside a function
counts: it is how circles were hidden), and the commands that need no model answer without torch."""
import ast
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("clipood_plugin", "domainbed_adapter", "dassl_trainers")


def import_graph(root, packages):
    """{module: {modules it imports, at module level or inside a function}}, over the modules of ``packages``
    in ``root``. ``from P import name`` imports the module P.name where there is one, else P itself."""
    files = {".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
             for package in packages for path in (root / package).rglob("*.py")}
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                for alias in node.names:
                    imported.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[module] = {name for name in imported if name in files and name != module}
    return graph


def cycles(graph):
    """Each circle of imports found by a depth-first search, as the list of its modules."""
    found, state = [], {}  # state: "open" while on the current path, "done" once every edge from it is seen

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = import_graph(PROJECT, PACKAGES)
    assert {"clipood_plugin.cli", "domainbed_adapter.algorithms", "dassl_trainers.trainer"} <= set(graph)
    assert cycles(graph) == []


def test_the_graph_sees_a_circle_closed_by_an_import_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import os\n\n\ndef f():\n    from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from .. import c\n")
    (package / "c.py").write_text("from pkg import a\n")
    (package / "d.py").write_text("from . import a\n")  # into the circle, not part of it
    assert cycles(import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (package / "c.py").write_text("def g():\n    return 1\n")
    assert cycles(import_graph(tmp_path, ["pkg"])) == []


BLOCK_TORCH = """
import runpy, sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked by the test")

sys.meta_path.insert(0, BlockTorch())
sys.argv = ["clipood", *sys.argv[1:]]
try:
    runpy.run_module("clipood_plugin", run_name="__main__")
finally:
    print("torch imported:", "torch" in sys.modules)
"""


def clipood_without_torch(*argv, cwd):
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH, *map(str, argv)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_help_and_a_figure5_dry_run_answer_with_torch_blocked(tmp_path):
    help_result = clipood_without_torch("--help", cwd=tmp_path)
    assert help_result.returncode == 0, help_result.stderr
    assert "{train,demo,export,evaluate,summary,figure5}" in help_result.stdout

    out = tmp_path / "fig5"
    result = clipood_without_torch("figure5", "run", "--output-dir", out, "--dry-run", "--data-dir", "D",
                                   "--test-domains", "t", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("clipood train ")]
    assert len(commands) == 19 and all(f"--output-dir {out}/runs/" in command for command in commands)
    assert result.stdout.rstrip().endswith("torch imported: False") and not out.exists()


def test_the_blocker_does_block_torch(tmp_path):
    """What the test above shows needs the blocker to work: a command that needs torch fails under it."""
    result = clipood_without_torch("demo", "--output-dir", tmp_path / "demo", cwd=tmp_path)
    assert result.returncode != 0 and "torch is blocked by the test" in result.stderr
