"""Shared test fixtures: the ``../shared`` data folder (skipped with a reason when absent, but under
``CI=true`` its absence fails the run: CI must never pass without the fidelity tests), modules written for
one test. The helpers tests import are in ``support/helpers.py`` (on pytest's ``pythonpath``)."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import SHARED, shared_path


def pytest_configure(config):
    if os.environ.get("CI") == "true" and not (SHARED / "reference").is_dir():
        raise pytest.UsageError(f"CI=true but {SHARED / 'reference'} is absent: the fidelity tests would all be "
                                "skipped; lay ../shared beside the checkout (or set SELO_SHARED)")
    # One runtime for the whole suite, whatever a timing would pick (auto): surfaces compared byte for byte
    # must run the same network; tests/test_runtimes.py names its runtimes. Exported models in a folder of the run.
    os.environ["SELO_RUNTIME"] = "torch"
    config.runtime_cache = tempfile.TemporaryDirectory(prefix="selo-runtimes-")
    os.environ["SELO_RUNTIME_CACHE"] = config.runtime_cache.name


def pytest_unconfigure(config):
    if hasattr(config, "runtime_cache"):
        config.runtime_cache.cleanup()


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture
def importable_module(tmp_path, monkeypatch):
    """``write(name, source)`` puts ``<name>.py`` in ``tmp_path``, on ``sys.path``, and returns the folder.

    A module of that name imported by an earlier test is dropped first, and this one at teardown: the
    earlier test's folder is gone (a passed test's ``tmp_path`` is removed), and the module would
    otherwise be served from ``sys.modules`` with a file that no longer exists.
    """
    names = []

    def write(name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(source)
        sys.modules.pop(name, None)
        names.append(name)
        return tmp_path

    monkeypatch.syspath_prepend(str(tmp_path))
    yield write
    for name in names:
        sys.modules.pop(name, None)
