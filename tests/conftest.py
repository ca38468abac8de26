"""Shared test fixtures: the ``../shared`` data folder (skipped with a reason when absent)."""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SELO_SHARED", REPO_ROOT.parent / "shared"))
sys.path.insert(0, str(REPO_ROOT))


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``; skips the calling test when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} not available (the ../shared folder beside the checkout is absent)")
    return path


@pytest.fixture
def shared():
    return shared_path
