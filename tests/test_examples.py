"""Every example runs in smoke mode, as a user would run it, in a temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Each example starts a fresh interpreter (torch import included): mark them slow.
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, **env: str) -> str:
    # The console script lives next to the interpreter (a virtual environment's bin/).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    full_env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run(
        args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_custom_loop(tmp_path: Path) -> None:
    out = _run([sys.executable, str(EXAMPLES / "custom_loop.py"), "--smoke"], tmp_path)
    assert "loss" in out
    assert "(sdm " in out
    assert ", id " in out
    assert "test t2i" in out
    assert "mINP" in out


def test_notebook_search(tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    script = str(EXAMPLES / "notebook_search.py")
    out = _run([sys.executable, script, "--smoke", "--out", str(grid)], tmp_path)
    assert "indexed 24 images" in out
    assert [line[:3] for line in out.splitlines() if line[:1].isdigit()] == [
        "1. ",
        "2. ",
        "3. ",
        "4. ",
        "5. ",
    ]
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probabilistic_uncertainty(tmp_path: Path) -> None:
    script = str(EXAMPLES / "probabilistic_uncertainty.py")
    out = _run([sys.executable, script, "--smoke", "--out", str(tmp_path / "u")], tmp_path)
    assert "most uncertain queries" in out
    written = [p for p in (tmp_path / "u.png", tmp_path / "u.csv") if p.exists()]
    assert len(written) == 1
    if written[0].suffix == ".csv":
        lines = written[0].read_text().splitlines()
        assert lines[0] == "caption,uncertainty,first_positive_rank"
        values = [float(line.rsplit(",", 2)[1]) for line in lines[1:]]
        assert values == sorted(values, reverse=True)
        assert len(values) > 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="the example is a bash script")
def test_train_cuhk_pedes_smoke(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    script = str(EXAMPLES / "train_cuhk_pedes.sh")
    out = _run(["bash", script], tmp_path, TEXTREID_SMOKE="1", OUT=str(out_dir))
    assert "test t2i" in out
    assert (out_dir / "run" / "retriever" / "model.safetensors").is_file()
    assert (out_dir / "search_grid.png").is_file()
    assert "query: a woman in a pink coat" in out


def test_full_script_refuses_without_data(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "TEXTREID_SMOKE")}
    proc = subprocess.run(
        ["bash", str(EXAMPLES / "train_cuhk_pedes.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "set DATA to the folder that holds CUHK-PEDES/" in proc.stderr
