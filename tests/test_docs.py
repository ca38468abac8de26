"""The documentation holds: the site builds with ``mkdocs build --strict`` (a broken link, anchor or
reference, a page missing from the nav or a docstring mkdocstrings cannot render fails it), and every
```python example of the README and of ``docs/`` runs as written, each in a fresh process in an empty folder
(sketches that need downloads are fenced ```py and not run)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT, subprocess_env

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
EXAMPLE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[str, str]]:
    """``(page:line, code)`` of every ```python block of the pages."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in EXAMPLE.finditer(text):
            line = text[:match.start()].count("\n") + 1
            found.append((f"{page.relative_to(REPO_ROOT)}:{line}", match.group(1)))
    return found


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**subprocess_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "reference" / "index.html").is_file()


def test_there_are_examples_to_run():
    assert len(examples()) >= 4


@pytest.mark.parametrize("where, code", examples(), ids=[where for where, _ in examples()])
def test_each_python_example_runs(where, code, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert done.returncode == 0, f"{where}:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
