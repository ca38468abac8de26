"""The layers hold: the import contracts in ``pyproject.toml`` (``[tool.importlinter]``) are kept by this
checkout, as import-linter (pinned in requirements.txt) checks them, so a change that breaks one fails
``make test``; and each contract bites: a copy of the packages with one forbidden import added per
contract is reported broken on exactly those imports."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"  # the one of this venv
CONTRACTS = REPO_ROOT / "pyproject.toml"
# one import each contract forbids: (module file, the import added to it, what lint-imports reports)
VIOLATIONS = [("evaluations/utils.py", "import predict.io.atomic", "evaluations.utils -> predict.io.atomic"),
              ("predict/io/logs.py", "import predict.run.timing", "predict.io.logs -> predict.run.timing"),
              ("predict/encoders/text.py", "import predict.demo.make_testset",
               "predict.encoders.text -> predict.demo.make_testset"),
              ("predict/core/stretch.py", "import predict.io.atomic", "predict.core.stretch -> predict.io.atomic"),
              ("predict/core/tiling.py", "import torch", "predict.core.tiling -> torch")]


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
    assert kept and int(kept[1]) >= 4, result.stdout


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
