"""Shared fixture: a small CUHK-PEDES annotation list."""

from __future__ import annotations

from typing import Any

import pytest
from _pedes_fixtures import cuhk_entry


@pytest.fixture
def cuhk_entries() -> list[dict[str, Any]]:
    """Mixed split order, 3 captions on one image, ids starting at 1 as in the real file."""
    return [
        cuhk_entry("train", 2, "CUHK01/0002001.png", ["b one", "b two"]),
        cuhk_entry("test", 7, "test_query/p7_s1.jpg", ["t seven a", "t seven b"]),
        cuhk_entry("train", 1, "CUHK01/0001001.png", ["a one", "a two", "a three"]),
        cuhk_entry("val", 5, "cam_a/005_0.bmp", ["v five"]),
        cuhk_entry("train", 2, "CUHK03/2_1.png", ["b three", "b four"]),
        cuhk_entry("test", 7, "test_query/p7_s2.jpg", ["t seven c"]),
        cuhk_entry("test", 9, "Market/0009_c1.jpg", ["t nine"]),
        cuhk_entry("train", 3, "cam_b/003_1.bmp", ["c one", "c two"]),
    ]
