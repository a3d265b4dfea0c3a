"""EFALoss: parity with FMFA's released code (both versions), masking, chunking, errors."""

from __future__ import annotations

import pytest
import torch

from textreid.losses.efa import EFALoss

# Reference numbers: FMFA's released EFA (aggregation in model/build_finetune.py and
# compute_minmax_info_loss at HEAD d0a3403; compute_efa with margins 0.1/0.1 at 8dfd532), run on
# inputs made by _inputs() in float64. Keys: loss, sum and abs-sum of both input gradients.
_REF = {
    ("tiny", "head"): (
        5.577171811597784,
        0.0540819105485013,
        0.6717463745196377,
        0.014274009927823007,
        0.623176183898569,
    ),
    ("tiny", "v1"): (
        4.19769909926119,
        -0.1282153498958385,
        1.765299338528574,
        0.17922813335578686,
        1.4033189232934151,
    ),
    ("real", "head"): (
        12.97487550351169,
        -0.0036835969255789624,
        0.25668081915082813,
        -0.0001490515914711869,
        0.14720102000118876,
    ),
    ("real", "v1"): (
        11.217254024533098,
        -0.028788300578429408,
        2.294632456946133,
        -0.00264588470677881,
        1.2624868417600412,
    ),
}
_SHAPES = {"tiny": (3, 4, 5, 6), "real": (16, 77, 192, 512)}
_VERSIONS = {"head": {}, "v1": {"temperature": 0.1, "margin_patch": 0.1}}


def _inputs(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    b, n_txt, p, d = _SHAPES[case]
    g = torch.Generator().manual_seed(7)
    img = torch.randn(b, p + 1, d, generator=g, dtype=torch.float64)
    txt = torch.randn(b, n_txt, d, generator=g, dtype=torch.float64)
    return img[:, 1:].clone().requires_grad_(), txt.requires_grad_()


@pytest.mark.parametrize("case", ["tiny", "real"])
@pytest.mark.parametrize("version", ["head", "v1"])
def test_parity_with_fmfa(case: str, version: str) -> None:
    img, txt = _inputs(case)
    loss = EFALoss(chunk_size=4, **_VERSIONS[version])(img, txt)  # type: ignore[arg-type]
    loss.backward()
    assert img.grad is not None
    assert txt.grad is not None
    want = _REF[(case, version)]
    got = (
        loss.item(),
        img.grad.sum().item(),
        img.grad.abs().sum().item(),
        txt.grad.sum().item(),
        txt.grad.abs().sum().item(),
    )
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-5, rel=1e-7)


def test_hand_computed_two_samples() -> None:
    # Orthonormal, one token each: s = [[1, 0], [0, 1]] after pooling and row normalisation.
    img = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    txt = img.clone()
    loss = EFALoss(margin_text=0.1, margin_patch=0.9)(img, txt)
    # Per column and direction: log(1 + exp(0 - 1 + m)); two directions, two branches.
    want = 2 * torch.log1p(torch.exp(torch.tensor(-0.9))) + 2 * torch.log1p(
        torch.exp(torch.tensor(-0.1))
    )
    torch.testing.assert_close(loss, want)


def test_chunked_equals_unchunked_with_masks() -> None:
    img = torch.randn(5, 7, 4, dtype=torch.float64, requires_grad=True)
    txt = torch.randn(5, 6, 4, dtype=torch.float64, requires_grad=True)
    im = torch.rand(5, 7) > 0.3
    im[:, 0] = True
    tm = torch.rand(5, 6) > 0.3
    tm[:, 0] = True
    kw = {"include_padding": False}
    ref = EFALoss(chunk_size=None, **kw)(img, txt, im, tm)  # type: ignore[arg-type]
    g_ref = torch.autograd.grad(ref, (img, txt))
    out = EFALoss(chunk_size=2, **kw)(img, txt, im, tm)  # type: ignore[arg-type]
    g = torch.autograd.grad(out, (img, txt))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_padding_with_garbage_never_changes_the_loss() -> None:
    img, txt = torch.randn(3, 6, 8), torch.randn(3, 5, 8)
    loss = EFALoss(include_padding=False)
    base = loss(img, txt, torch.ones(3, 6, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool))
    img_p = torch.cat([img, 1e3 * torch.randn(3, 2, 8)], dim=1)
    txt_p = torch.cat([txt, 1e3 * torch.randn(3, 3, 8)], dim=1)
    im = torch.cat([torch.ones(3, 6), torch.zeros(3, 2)], dim=1).bool()
    tm = torch.cat([torch.ones(3, 5), torch.zeros(3, 3)], dim=1).bool()
    torch.testing.assert_close(loss(img_p, txt_p, im, tm), base, rtol=1e-5, atol=1e-5)


def test_reduction_and_single_sample() -> None:
    img, txt = torch.randn(4, 6, 8), torch.randn(4, 5, 8)
    per = EFALoss(reduction="none")(img, txt)
    assert per.shape == (4,)
    torch.testing.assert_close(per.mean(), EFALoss()(img, txt))
    torch.testing.assert_close(per.sum(), EFALoss(reduction="sum")(img, txt))
    one = EFALoss()(img[:1].requires_grad_(), txt[:1])
    assert one.item() == 0.0
    assert one.requires_grad


def test_errors() -> None:
    img, txt = torch.randn(3, 6, 8), torch.randn(3, 5, 8)
    with pytest.raises(ValueError, match="3 samples but text_tokens has 2"):
        EFALoss()(img, txt[:2])
    with pytest.raises(ValueError, match="include_padding=True"):
        EFALoss()(img, txt, text_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="text_mask has shape"):
        EFALoss(include_padding=False)(img, txt, text_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        EFALoss(chunk_size=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        EFALoss(reduction="avg")
