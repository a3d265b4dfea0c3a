"""MLMLoss (parity with IRRA's compute_mlm) and the IRRA masking rule."""

from __future__ import annotations

import pytest
import torch

from textreid.losses.mlm import MLMLoss
from textreid.text import mask_for_mlm

MASK, VOCAB = 49405, 49408


def test_parity_with_irra_compute_mlm() -> None:
    # IRRA model/objectives.py compute_mlm (HEAD cfc2378) on these seeded float64 logits.
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0, 3, 0, 7, 0, 0], [0, 0, 9, 0, 1, 0]])
    loss = MLMLoss(vocab_size=10)(z, y)
    loss.backward()
    assert z.grad is not None
    assert loss.item() == pytest.approx(2.0473524357182757, abs=1e-7)
    assert z.grad.abs().sum().item() == pytest.approx(1.5991795496989356, abs=1e-7)
    assert z.grad[0, 1, 3].item() == pytest.approx(-0.18231806736610928, abs=1e-7)


def test_hand_value_and_reductions() -> None:
    z = torch.zeros(1, 3, 4)
    y = torch.tensor([[0, 2, 3]])
    torch.testing.assert_close(MLMLoss()(z, y), torch.log(torch.tensor(4.0)))
    torch.testing.assert_close(MLMLoss(reduction="sum")(z, y), 2 * torch.log(torch.tensor(4.0)))
    none = MLMLoss(reduction="none")(z, y)
    assert none.shape == (1, 3)
    assert none[0, 0] == 0


def test_no_masked_position_is_zero_and_connected() -> None:
    z = torch.randn(1, 3, 4, requires_grad=True)
    out = MLMLoss()(z, torch.zeros(1, 3, dtype=torch.long))
    assert out.item() == 0.0
    assert out.requires_grad


def test_masking_rules() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, MASK, (64, 77), generator=g)
    ids[:, 0], ids[:, 30], ids[:, 31:] = 49406, 49407, 0
    before = ids.clone()
    masked, labels = mask_for_mlm(ids, MASK, VOCAB, generator=g)
    assert torch.equal(ids, before)  # never in place
    sel = labels != 0
    assert torch.equal(labels[sel], ids[sel])
    assert not sel[:, 0].any()
    assert not sel[:, 30:].any()
    assert torch.equal(masked[~sel], ids[~sel])
    rate = sel[:, 1:30].float().mean().item()
    assert 0.12 < rate < 0.18
    share_mask = (masked[sel] == MASK).float().mean().item()
    assert 0.7 < share_mask < 0.9
    assert int(masked[sel].max()) <= MASK


def test_forced_position_one_and_determinism() -> None:
    ids = torch.tensor([[49406, 49407, 0, 0], [49406, 5, 6, 49407]])
    masked, labels = mask_for_mlm(
        ids, MASK, VOCAB, generator=torch.Generator().manual_seed(1), probability=1e-9
    )
    assert masked[0, 1] == MASK
    assert labels[0, 1] == 49407
    assert masked[1, 1] == MASK
    assert labels[1, 1] == 5
    a = mask_for_mlm(ids, MASK, VOCAB, generator=torch.Generator().manual_seed(3))
    b = mask_for_mlm(ids, MASK, VOCAB, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    one_d = mask_for_mlm(ids[1], MASK, VOCAB, generator=torch.Generator().manual_seed(3))
    assert one_d[0].shape == (4,)


def test_errors() -> None:
    with pytest.raises(ValueError, match="vocabulary size 10 but vocab_size is 12"):
        MLMLoss(vocab_size=12)(torch.randn(1, 3, 10), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has shape"):
        MLMLoss()(torch.randn(1, 3, 10), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie in"):
        MLMLoss()(torch.randn(1, 3, 10), torch.full((1, 3), 10))
    with pytest.raises(ValueError, match="ids must lie in"):
        mask_for_mlm(torch.tensor([[1, VOCAB]]), MASK, VOCAB)
    with pytest.raises(ValueError, match="must be below vocab_size"):
        mask_for_mlm(torch.tensor([[1, 2]]), VOCAB, VOCAB)
    with pytest.raises(TypeError, match="integer tensor"):
        mask_for_mlm(torch.tensor([[1.0, 2.0]]), MASK, VOCAB)
    with pytest.raises(ValueError, match="at least 2 positions"):
        mask_for_mlm(torch.tensor([[1]]), MASK, VOCAB)


def test_non_finite_logits() -> None:
    logits, labels = torch.randn(2, 3, 10), torch.tensor([[0, 4, 0], [1, 0, 0]])
    logits[1, 2, 7] = float("nan")  # an unmasked position: it would not reach the loss
    with pytest.raises(ValueError, match="MLMLoss: logits contains 1 non-finite"):
        MLMLoss()(logits, labels)
    assert torch.isfinite(MLMLoss(check_finite=False)(logits, labels))
