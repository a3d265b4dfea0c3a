"""benchmarks/gpu_suite.py runs end to end in its CPU smoke mode (the GPU numbers need a GPU)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_gpu_suite_smoke(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_suite

    gpu_suite.main(["--smoke", "--amp", "fp16"])
    out = capsys.readouterr().out
    assert out.startswith("CPU (smoke run), torch ")
    assert "failed" not in out
    for name in ("evaluate", "topk_search"):
        for dtype in ("float16", "float32"):
            assert re.search(rf"^{name} +\| {dtype} +\| +\d+\.\d+ \|", out, re.M), (name, dtype)
    assert re.search(r"^textreid IRRA +\| fp16  \| +\d+\.\d+ \|", out, re.M)
    assert re.search(r"^open_clip CLIP +\| fp16  \| ( +\d+\.\d+ \||skipped: open_clip)", out, re.M)
    sys.modules.pop("gpu_suite", None)
