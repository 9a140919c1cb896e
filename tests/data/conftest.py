from __future__ import annotations

import sys
from pathlib import Path

import pytest

# data_helpers.py sits beside this file; make it importable in any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from litops.core.workspace import Workspace


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("LITOPS_HOME", raising=False)
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def ws(home) -> Workspace:
    return Workspace(home)
