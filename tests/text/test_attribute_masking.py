"""Random masking of attribute words: per-word rate, whole words, determinism, fixed shapes."""

from __future__ import annotations

import math

import pytest
import torch

from textreid.text import attribute_positions, mask_attribute_tokens

# Toy ids: 1 = "black", (2, 3) = "t-shirt" (two pieces), 3 alone = "-shirt" (a word that is
# also the tail of "t-shirt"), 4 = "bag", 0 = any other token.
SEQS = [(2, 3), (1,), (3,), (4,)]
ROW = [0, 1, 2, 3, 0, 4, 0, 1, 4, 0, 3, 0]  # black t-shirt . bag . black bag . -shirt
WORD_STARTS = [1, 2, 5, 7, 8, 10]  # six attribute words, "black t-shirt" adjacent


def _masked_words(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, WORD_STARTS]


@pytest.mark.parametrize("p", [0.15, 0.5, 0.85])
def test_each_word_is_masked_with_probability_p_independently(p: float) -> None:
    ids = torch.tensor([ROW] * 2000)
    out = mask_attribute_tokens(
        ids, SEQS, 99, mask_prob=p, generator=torch.Generator().manual_seed(3)
    )
    words = _masked_words(out.mask).float()
    n = words.numel()
    # 12000 Bernoulli(p) draws: 5 standard deviations is a 1-in-3e6 false alarm
    assert abs(float(words.mean()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    # adjacent words ("black" "t-shirt") are separate draws: both masked with p^2, not p
    both = float((words[:, 0] * words[:, 1]).mean())
    assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / ids.shape[0])
    # and non-attribute tokens are never touched
    assert not bool(out.mask[:, [0, 4, 6, 9, 11]].any())


def test_whole_words_only_and_labels_follow_the_mask() -> None:
    ids = torch.tensor([ROW] * 300)
    out = mask_attribute_tokens(
        ids, SEQS, 99, mask_prob=0.5, generator=torch.Generator().manual_seed(0)
    )
    # both pieces of "t-shirt" together, although "-shirt" alone is also a listed word
    assert torch.equal(out.mask[:, 2], out.mask[:, 3])
    assert bool(out.mask[:, 2].any())
    assert not bool(out.mask[:, 2].all())
    assert torch.equal(out.input_ids, ids.masked_fill(out.mask, 99))
    assert torch.equal(out.labels, ids.masked_fill(~out.mask, -100))
    assert torch.equal(out.mask | attribute_positions(ids, SEQS), attribute_positions(ids, SEQS))


def test_deterministic_under_the_seed() -> None:
    ids = torch.tensor([ROW] * 64)

    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return mask_attribute_tokens(ids, SEQS, 99, mask_prob=0.5, generator=g).mask

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))
    # without a generator the global RNG decides: torch.manual_seed reproduces it
    torch.manual_seed(11)
    a = mask_attribute_tokens(ids, SEQS, 99, mask_prob=0.5).mask
    torch.manual_seed(11)
    assert torch.equal(a, mask_attribute_tokens(ids, SEQS, 99, mask_prob=0.5).mask)


def test_shapes_never_depend_on_values() -> None:
    # Meta tensors carry no data: any host read or value-dependent shape (nonzero, boolean
    # indexing, .item()) raises. A training step on an accelerator would sync there.
    ids = torch.tensor([ROW] * 4, device="meta")
    out = mask_attribute_tokens(ids, SEQS, 99, mask_prob=0.5)
    assert out.mask.shape == out.input_ids.shape == out.labels.shape == (4, len(ROW))


def test_mask_prob_is_checked() -> None:
    ids = torch.tensor([ROW])
    with pytest.raises(ValueError, match=r"mask_attribute_tokens: mask_prob must be in \(0, 1\]"):
        mask_attribute_tokens(ids, SEQS, 99, mask_prob=1.5)
    with pytest.raises(TypeError, match="mask_attribute_tokens: mask_prob must be a float"):
        mask_attribute_tokens(ids, SEQS, 99, mask_prob="0.5")  # type: ignore[arg-type]
