"""Properties every matching loss shares: gradcheck, invariances, low-precision inputs, shapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from textreid.losses import (
    ASDMLoss,
    CMPCLoss,
    CMPMLoss,
    DirectionalLosses,
    IDLoss,
    InfoNCELoss,
    SDMLoss,
    TripletLoss,
)

Factory = Callable[..., nn.Module]

# name -> (factory taking reduction=, needs pids, normalised (scale invariant), symmetric)
LOSSES: dict[str, tuple[Factory, bool, bool, bool]] = {
    "sdm": (lambda **kw: SDMLoss(temperature=0.5, **kw), False, True, True),
    "asdm": (lambda **kw: ASDMLoss(alpha=0.5, temperature=0.5, **kw), False, True, True),
    "infonce": (lambda **kw: InfoNCELoss(temperature=0.5, **kw), False, True, True),
    "triplet_hardest": (lambda **kw: TripletLoss(margin=0.5, **kw), False, True, True),
    "triplet_sum": (lambda **kw: TripletLoss(margin=0.5, mining="sum", **kw), False, True, True),
    "cmpm": (lambda **kw: CMPMLoss(**kw), False, False, True),
    "id": (lambda **kw: IDLoss(5, 3, **kw), True, False, True),
    "cmpc": (lambda **kw: CMPCLoss(5, 3, **kw), True, False, True),
}
UNEQUAL = ["sdm", "asdm", "infonce", "triplet_hardest", "triplet_sum", "cmpm", "id"]


def _make(name: str, dtype: torch.dtype = torch.float64, **kw: str) -> nn.Module:
    torch.manual_seed(1)
    module = LOSSES[name][0](**kw).to(dtype)
    if name == "id":
        nn.init.normal_(module.classifier.weight, std=0.5)
    return module


def _batch(
    b: int = 4, d: int = 3, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    v = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    pids = torch.tensor([0, 1, 1, 3, 4, 2, 0, 4][:b])
    return v, t, pids


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradcheck_float64(name: str) -> None:
    loss = _make(name)
    v, t, pids = _batch()
    v.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, pids), (v, t))


@pytest.mark.parametrize("name", ["sdm", "asdm", "infonce"])
def test_gradcheck_tensor_logit_scale(name: str) -> None:
    loss = _make(name)
    v, t, pids = _batch()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, s: loss(a, t, pids, logit_scale=s), (v, scale))


@pytest.mark.parametrize("name", list(LOSSES))
def test_batch_permutation_invariance(name: str) -> None:
    loss = _make(name)
    v, t, pids = _batch(8)
    # A-SDM's first-positive rule depends on order within an identity; keep that order.
    perm = (
        torch.tensor([4, 1, 3, 7, 2, 6, 0, 5])
        if name != "asdm"
        else torch.tensor([3, 0, 1, 2, 5, 4, 6, 7])
    )
    torch.testing.assert_close(loss(v, t, pids), loss(v[perm], t[perm], pids[perm]))


@pytest.mark.parametrize("name", [n for n, spec in LOSSES.items() if spec[2]])
def test_feature_scale_invariance(name: str) -> None:
    loss = _make(name)
    v, t, pids = _batch()
    scales = torch.tensor([[0.1], [3.0], [20.0], [1.5]], dtype=torch.float64)
    torch.testing.assert_close(loss(v, t, pids), loss(v * scales, t * 7.0, pids))


@pytest.mark.parametrize("name", [n for n, spec in LOSSES.items() if spec[3]])
def test_modality_swap_symmetry(name: str) -> None:
    loss = _make(name, reduction="none")
    v, t, pids = _batch()
    a = loss(v, t, pids)
    b = loss(t, v, pids)
    torch.testing.assert_close(a.image_to_text, b.text_to_image)
    torch.testing.assert_close(a.text_to_image, b.image_to_text)


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_low_precision_inputs_give_float32_answer(name: str, low: torch.dtype) -> None:
    loss = _make(name, torch.float32)
    v32, t32, pids = _batch(8, 3, torch.float32)
    v, t = v32.to(low), t32.to(low)
    out = loss(v, t, pids)
    assert out.dtype == torch.float32
    # Same rounded values in float32: the same computation.
    torch.testing.assert_close(out, loss(v.float(), t.float(), pids), rtol=1e-6, atol=1e-6)
    # Unrounded float32 inputs: only the input rounding (bf16 keeps 8 bits) separates them.
    torch.testing.assert_close(out, loss(v32, t32, pids), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", list(LOSSES))
def test_reduction_shapes_and_consistency(name: str) -> None:
    v, t, pids = _batch(4)
    none = _make(name, reduction="none")(v, t, pids)
    assert isinstance(none, DirectionalLosses)
    assert none.image_to_text.shape == (4,)
    assert none.text_to_image.shape == (4,)
    half = 0.5 if name in ("infonce", "id") else 1.0
    mean = _make(name, reduction="mean")(v, t, pids)
    total = _make(name, reduction="sum")(v, t, pids)
    torch.testing.assert_close(mean, half * (none.image_to_text.mean() + none.text_to_image.mean()))
    torch.testing.assert_close(total, half * (none.image_to_text.sum() + none.text_to_image.sum()))


@pytest.mark.parametrize("name", UNEQUAL)
def test_unequal_sides_shapes(name: str) -> None:
    loss = _make(name, reduction="none")
    g = torch.Generator().manual_seed(3)
    v = torch.randn(3, 3, generator=g, dtype=torch.float64)
    t = torch.randn(6, 3, generator=g, dtype=torch.float64)
    out = loss(v, t, image_pids=torch.tensor([0, 1, 2]), text_pids=torch.tensor([0, 0, 1, 1, 2, 2]))
    assert out.image_to_text.shape == (3,)
    assert out.text_to_image.shape == (6,)
    assert bool(torch.isfinite(out.image_to_text).all() and torch.isfinite(out.text_to_image).all())


@pytest.mark.parametrize("name", list(LOSSES))
def test_single_sample_is_finite_and_connected(name: str) -> None:
    loss = _make(name)
    v, t, pids = _batch(1)
    v.requires_grad_(True)
    out = loss(v, t, pids)
    out.backward()
    assert torch.isfinite(out)
    assert v.grad is not None
