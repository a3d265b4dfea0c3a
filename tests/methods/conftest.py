"""The session-wide caption tokenizer of the method tests."""

from __future__ import annotations

import pytest

from textreid.tokenization import CLIPTokenizer


@pytest.fixture(scope="session")
def tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer(mask_token="<|mask|>")
