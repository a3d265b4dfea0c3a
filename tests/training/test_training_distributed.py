"""Distributed helpers and a 2-process gloo run compared with a single-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from textreid.training import (
    DistInfo,
    distributed_sampler,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_single_process_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert init_distributed() == DistInfo(0, 1, 0)
    assert (get_rank(), get_world_size(), is_main_process()) == (0, 1, True)
    assert distributed_sampler(list(range(4))) is None  # type: ignore[arg-type]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed() == DistInfo(0, 1, 0)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"WORLD_SIZE": "two"}, "environment variable WORLD_SIZE must be an integer, got 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "inconsistent environment RANK=2, WORLD_SIZE=2"),
        ({"WORLD_SIZE": "0"}, "inconsistent environment"),
    ],
)
def test_bad_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], match: str) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=f"init_distributed: {match}"):
        init_distributed()


@pytest.mark.slow
def test_torchrun_two_processes_match_single_process(tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))
    import ddp_toy_run

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(HERE / "ddp_toy_run.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_sizes"] for r in reports] == [[2], [2]]
    assert reports[0]["evaluated"] == [0, 0]
    assert reports[1]["evaluated"] == []
    assert reports[0]["best_epoch"] == reports[1]["best_epoch"] == 1  # broadcast result

    # Reference: one process, global batch = 2 ranks x per-rank batch, same sample order
    # (DistributedSampler without shuffling interleaves indices between the two ranks).
    method, data = ddp_toy_run.build()
    loader = torch.utils.data.DataLoader(data, batch_size=2 * ddp_toy_run.PER_RANK_BATCH)
    from textreid.training import Trainer

    Trainer(method, loader, ddp_toy_run.config(tmp_path / "single")).fit()
    ddp_state = torch.load(out / "final.pt", weights_only=True)
    for k, v in method.state_dict().items():
        torch.testing.assert_close(ddp_state[k], v, rtol=1e-5, atol=1e-6)

    def losses(d: Path) -> list[float]:
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [x["loss"] for x in lines if "loss" in x]

    assert losses(out) == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    assert len(losses(out)) == 4
