"""Shared fixture of the loss tests: numbers from the authors' reference code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "reference_losses.json"


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    """Numbers produced by running the authors' loss functions (IRRA, FMFA) on the recipe in _reference_inputs.py."""
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data
