"""Attribute-word masking helpers and the uncertainty-weighted reconstruction loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from textreid.losses.attribute_mask import (
    AttributeMaskReconstructionLoss,
    attribute_mask_reconstruction_loss,
)
from textreid.text import (
    PEDESTRIAN_ATTRIBUTE_WORDS,
    attribute_positions,
    attribute_token_sequences,
    mask_attribute_tokens,
)

VOCAB = {
    w: i + 10
    for i, w in enumerate(
        ["a", "man", "in", "black", "t", "-shirt", "blue", "jeans", "with", "bag", "shirt"]
    )
}


def _tok(text: str) -> list[int]:
    # toy word-piece tokenizer: "t-shirt" -> ["t", "-shirt"]
    out: list[int] = []
    for word in text.split():
        if word == "t-shirt":
            out += [VOCAB["t"], VOCAB["-shirt"]]
        elif word in VOCAB:
            out.append(VOCAB[word])
    return out


def test_sequences_and_positions() -> None:
    seqs = attribute_token_sequences(_tok, ["black", "t-shirt", "jeans", "bag", "unknownword"])
    assert seqs[0] == (VOCAB["t"], VOCAB["-shirt"])  # longest first, unknown word dropped
    assert len(seqs) == 4
    ids = torch.tensor(
        [[*_tok("a man in black t-shirt with bag"), 0], [*_tok("blue jeans a man in"), 0, 0, 0, 0]]
    )
    pos = attribute_positions(ids, seqs)
    assert pos.tolist() == [
        [False, False, False, True, True, True, False, True, False],
        [False, True, False, False, False, False, False, False, False],
    ]


def test_mask_all_and_labels() -> None:
    seqs = attribute_token_sequences(_tok, ["black", "t-shirt"])
    ids = torch.tensor([_tok("a man in black t-shirt")])
    out = mask_attribute_tokens(ids, seqs, mask_token_id=99)
    assert out.input_ids.tolist() == [[10, 11, 12, 99, 99, 99]]
    assert out.labels.tolist() == [[-100, -100, -100, 13, 14, 15]]
    assert out.mask.sum() == 3


def test_mask_prob_whole_words_and_determinism() -> None:
    seqs = attribute_token_sequences(_tok, ["t-shirt", "bag"])
    ids = torch.tensor([_tok("t-shirt with bag with t-shirt with bag")] * 50)
    a = mask_attribute_tokens(
        ids, seqs, 99, mask_prob=0.5, generator=torch.Generator().manual_seed(0)
    )
    b = mask_attribute_tokens(
        ids, seqs, 99, mask_prob=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(a.mask, b.mask)
    # a two-piece word is masked entirely or not at all
    assert torch.equal(a.mask[:, 0], a.mask[:, 1])
    assert torch.equal(a.mask[:, 5], a.mask[:, 6])
    rate = a.mask.float().mean() / attribute_positions(ids, seqs).float().mean()
    assert 0.3 < float(rate) < 0.7


def test_default_vocabulary_nonempty_and_unique() -> None:
    assert "black" in PEDESTRIAN_ATTRIBUTE_WORDS
    assert "jacket" in PEDESTRIAN_ATTRIBUTE_WORDS
    assert len(set(PEDESTRIAN_ATTRIBUTE_WORDS)) == len(PEDESTRIAN_ATTRIBUTE_WORDS)


def test_loss_hand_value() -> None:
    logits = torch.zeros(2, 3, 4)
    logits[0, 1, 2] = 2.0
    labels = torch.tensor([[-100, 2, -100], [1, -100, 3]])
    u = torch.tensor([1.0, 0.0])
    ce_first = -math.log(math.exp(2) / (math.exp(2) + 3))
    expected = (0.5 * ce_first + 2 * math.log(4)) / 3
    loss = attribute_mask_reconstruction_loss(logits, labels, u)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    plain = AttributeMaskReconstructionLoss(weighting="none")(logits, labels)
    ref = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1))
    torch.testing.assert_close(plain, ref)
    rows = attribute_mask_reconstruction_loss(logits, labels, u, reduction="none")
    assert rows.shape == (2, 3)
    assert float(rows[0, 0]) == 0.0


def test_loss_uncertainty_gradient_and_empty_mask() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    u = torch.tensor([0.5, 2.0], requires_grad=True)
    labels = torch.tensor([[1, -100, 2], [-100, 4, -100]])
    attribute_mask_reconstruction_loss(logits, labels, u).backward()
    assert u.grad is None
    u2 = torch.tensor([0.5, 2.0], requires_grad=True)
    attribute_mask_reconstruction_loss(logits, labels, u2, detach_uncertainty=False).backward()
    assert u2.grad is not None
    assert bool((u2.grad < 0).all())
    empty = attribute_mask_reconstruction_loss(logits, torch.full((2, 3), -100), u)
    assert float(empty.detach()) == 0.0
    assert empty.requires_grad


def test_loss_gradcheck() -> None:
    logits = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, -100, 2], [0, 3, -100]])
    u = torch.tensor([0.3, 1.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: attribute_mask_reconstruction_loss(x, labels, u), (logits,)
    )


def test_errors() -> None:
    logits, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="weighting='inverse' needs uncertainty"):
        attribute_mask_reconstruction_loss(logits, labels)
    with pytest.raises(ValueError, match=r"labels has shape \(2, 2\) but logits has \(2, 3\)"):
        attribute_mask_reconstruction_loss(logits, labels[:, :2], torch.zeros(2))
    with pytest.raises(ValueError, match="uncertainty has 3 entries but logits has 2 rows"):
        attribute_mask_reconstruction_loss(logits, labels, torch.zeros(3))
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        attribute_mask_reconstruction_loss(logits, labels.float(), torch.zeros(2))
    with pytest.raises(
        ValueError, match="AttributeMaskReconstructionLoss: weighting must be one of"
    ):
        AttributeMaskReconstructionLoss(weighting="exp")
    with pytest.raises(ValueError, match=r"mask_prob must be in \(0, 1\], got 0.0"):
        mask_attribute_tokens(labels, [(1,)], 9, mask_prob=0.0)
    with pytest.raises(ValueError, match="must not contain an empty sequence"):
        attribute_positions(labels, [()])
    with pytest.raises(TypeError, match="must return ints"):
        attribute_token_sequences(lambda w: ["x"], ["black"])  # type: ignore[list-item,return-value]
