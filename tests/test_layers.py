"""The layers hold: the import contracts in ``pyproject.toml`` (``[tool.importlinter]``) are kept by this
checkout, as import-linter (pinned in requirements.txt) checks them, so a change that breaks one fails
``make test``; and each contract bites: a copy of the packages with one forbidden import added per
contract is reported broken on exactly those imports."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the one of this venv
CONTRACTS = REPO_ROOT / "pyproject.toml"
# one import each contract forbids: (module file, the import added to it, what lint-imports reports)
VIOLATIONS = [("evaluations/utils.py", "import predict.provenance.store", "evaluations.utils -> predict.provenance.store"),
              ("predict/io/logs.py", "import predict.localisation.timing", "predict.io.logs -> predict.localisation.timing"),
              ("predict/encoders/text.py", "import predict.demo.make_testset",
               "predict.encoders.text -> predict.demo.make_testset"),
              ("predict/core/stretch.py", "import predict.provenance.store", "predict.core.stretch -> predict.provenance.store"),
              ("predict/core/tiling.py", "import torch", "predict.core.tiling -> torch"),
              ("predict/explorer/explorer.py", "import fastapi", "predict.explorer.explorer -> fastapi")]


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with this checkout's contracts on the packages in ``folder`` (run from there: it puts
    its working directory first on the import path); its output as text."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(CONTRACTS), "--no-cache", "--no-logo"], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def not_source(folder: str, names: list[str]) -> list[str]:
    """The names in ``folder`` that are neither Python files nor folders (``shutil.copytree``'s ``ignore``)."""
    return [name for name in names if not name.endswith(".py") and not (Path(folder) / name).is_dir()]


def test_the_layer_contracts_are_kept():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    kept = re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout)
    assert kept and int(kept[1]) >= 5, result.stdout


def test_every_contract_reports_an_import_it_forbids(tmp_path):
    for package in ("predict", "evaluations"):
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=not_source)
    for module, line, _ in VIOLATIONS:
        with open(tmp_path / module, "a", encoding="utf-8") as f:
            f.write(f"\n{line}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept" in result.stdout, result.stdout
    for _, _, reported in VIOLATIONS:
        assert reported in result.stdout, result.stdout


# ---- the applications meet only through their faces ---------------------------------------------------------

APPLICATIONS = ("testset", "scenes", "archive", "explorer", "compare", "localisation")
IMPORTERS = APPLICATIONS + ("cli", "web")


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a source file imports (``from X import Y`` as ``X``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def private_imports(root: Path) -> list[str]:
    """``importer -> module`` for each import of an application's private module (``predict.<app>.<module>``)
    from outside that application, by the applications, the commands and the web."""
    found = []
    for importer in IMPORTERS:
        for path in sorted((root / "predict" / importer).rglob("*.py")):
            for name in sorted(imported_modules(path)):
                parts = name.split(".")
                if len(parts) > 2 and parts[0] == "predict" and parts[1] in APPLICATIONS and parts[1] != importer:
                    found.append(f"{path.relative_to(root)} -> {name}")
    return found


def test_applications_meet_only_through_their_faces(tmp_path):
    assert private_imports(REPO_ROOT) == []
    shutil.copytree(REPO_ROOT / "predict", tmp_path / "predict", ignore=not_source)  # and the check bites
    with open(tmp_path / "predict" / "archive" / "__init__.py", "a", encoding="utf-8") as f:
        f.write("\nfrom predict.scenes.run import first_stage\n")
    assert private_imports(tmp_path) == ["predict/archive/__init__.py -> predict.scenes.run"]


# ---- the process belongs to the commands -------------------------------------------------------------------

# Calls that change what every thread of the process sees: warnings filters and hooks, thread counts, the
# environment, the allocator, the error state, the working directory.
PROCESS_WIDE_CALLS = {"warnings.catch_warnings", "warnings.simplefilter", "warnings.filterwarnings",
                      "warnings.resetwarnings", "logging.captureWarnings", "logging.basicConfig",
                      "cv2.setNumThreads", "cv2.setUseOptimized", "torch.set_num_threads",
                      "torch.set_num_interop_threads", "torch.set_default_dtype", "np.seterr", "numpy.seterr",
                      "os.environ.setdefault", "os.environ.update", "os.environ.pop", "os.environ.clear",
                      "os.putenv", "os.unsetenv", "os.chdir", "os.umask", "sys.setrecursionlimit", "signal.signal"}
PROCESS_WIDE_NAMES = {"mallopt", "malloc_trim"}  # glibc's, through ctypes
PROCESS_WIDE_TARGETS = {"os.environ", "warnings.showwarning", "warnings.formatwarning", "warnings.filters"}
# Where the process may be changed: the commands (predict/cli, a script's main) and predict/runtime.py,
# which they call; and one open under a lock in predict/io/raster.py (see ``opened``: rasterio warns from
# inside the open that a plain PNG has no georeferencing, which it needs none of here).
COMMANDS = ("predict/cli/", "predict/runtime.py")
ALLOWED = {("predict/io/raster.py", "opened", "warnings.catch_warnings"),
           ("predict/io/raster.py", "opened", "warnings.filterwarnings")}


def dotted(node) -> str:
    """``a.b.c`` of a name or attribute chain (``os.environ[...]`` gives ``os.environ``); "" otherwise."""
    if isinstance(node, ast.Subscript):
        return dotted(node.value)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return node.id if isinstance(node, ast.Name) else ""


def process_wide_changes(source: str, path: str) -> list[tuple[str, str, str]]:
    """``(path, enclosing function, what)`` of each call or assignment in ``source`` that changes process-wide
    state (see the sets above), outside a function named ``main``."""
    found = []

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if function != "main":
            if isinstance(node, ast.Call):
                name = dotted(node.func)
                last = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in PROCESS_WIDE_CALLS or last in PROCESS_WIDE_NAMES:
                    found.append((path, function, name or last))
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else \
                node.targets if isinstance(node, ast.Delete) else []
            found.extend((path, function, dotted(t)) for t in targets if dotted(t) in PROCESS_WIDE_TARGETS)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "")
    return found


def test_only_the_commands_change_process_wide_state():
    """The library (``localise()``, ``evaluate()``, the engines, the explorer) leaves the process as it found it:
    its warnings travel as data (:mod:`predict.core.notes`), its settings are the commands'."""
    changes = []
    for package in ("predict", "evaluations"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if not relative.startswith(COMMANDS):
                changes += process_wide_changes(path.read_text(encoding="utf-8"), relative)
    assert [change for change in changes if change not in ALLOWED] == []
    assert sorted(set(changes)) == sorted(ALLOWED)  # the exception is still there, and still needed


def test_the_process_check_finds_each_kind_of_change():
    source = """
import os, warnings, ctypes, cv2, torch, numpy as np
def library():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
    warnings.showwarning = print
    os.environ["A"] = "1"
    os.environ.setdefault("B", "2")
    del os.environ["A"]
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    np.seterr(all="ignore")
    ctypes.CDLL(None).malloc_trim(0)
def main():
    cv2.setNumThreads(1)
"""
    assert [what for _, _, what in process_wide_changes(source, "x.py")] == [
        "warnings.catch_warnings", "warnings.simplefilter", "warnings.showwarning", "os.environ",
        "os.environ.setdefault", "os.environ", "cv2.setNumThreads", "torch.set_num_threads", "np.seterr",
        "malloc_trim"]
