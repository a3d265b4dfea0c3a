"""gather_with_grad / gather_features: identity outside a process group; 2-rank parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._torchrun import run_torchrun
from textreid.losses import InfoNCELoss, SDMLoss, gather_features, gather_with_grad


def test_identity_without_process_group() -> None:
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x
    v, t, p = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1])
    out = gather_features(v, t, p)
    assert out[0] is v
    assert out[1] is t
    assert out[2] is p


def test_gather_rejects_non_tensors() -> None:
    with pytest.raises(TypeError, match=r"gather_with_grad: x must be a torch\.Tensor, got list"):
        gather_with_grad([1.0])
    with pytest.raises(
        ValueError, match="gather_with_grad: x must have a row dimension, got a 0-D tensor"
    ):
        gather_with_grad(torch.tensor(1.0))
    with pytest.raises(
        TypeError, match=r"gather_features: pids must be an integer tensor, got torch\.float32"
    ):
        gather_features(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(2))


@pytest.mark.slow
def test_two_ranks_equal_single_process(tmp_path: Path) -> None:
    out = tmp_path / "ranks.pt"
    run_torchrun(Path(__file__).with_name("_distributed_worker.py"), 2, str(out))
    ranks = torch.load(out, weights_only=True)

    g = torch.Generator().manual_seed(0)
    v = torch.randn(8, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    t = torch.randn(8, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    pids = torch.tensor([0, 1, 2, 0, 3, 1, 4, 2])
    for name, loss in (("sdm", SDMLoss()), ("infonce", InfoNCELoss())):
        v.grad = t.grad = None
        single = loss(v, t, pids)
        single.backward()
        got = ranks[name]
        assert torch.equal(got["pids"], pids)
        torch.testing.assert_close(got["loss"], single.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got["grad_image"], v.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["grad_text"], t.grad, rtol=1e-10, atol=1e-12)
