"""MultiLevelAlignmentLoss and IVT's text-level utilities, against IVT's released code."""

from __future__ import annotations

import random

import pytest
import torch

from textreid.losses.cmpm import cmpm_loss
from textreid.losses.mla import MultiLevelAlignmentLoss
from textreid.text import phrase_level_text, word_level_text

CAPS = [
    "a woman wearing a white shirt, black pants and red shoes. she carries a bag, walking.",
    "[the man has short hair, a blue jacket, grey trousers and black shoes.]",
    "a man in a black coat, jeans. he wears glasses",
]
ATTS = {
    "hair": "short black hair",
    "top": "white shirt",
    "trousers": "black pants",
    "shoes": "red shoes",
}


def test_phrase_level_matches_ivt() -> None:
    # IVT processor.get_phrase_level_txt(CAPS) after random.seed(7) (HEAD f205788).
    rng = random.Random(7)
    got = [phrase_level_text(c, rng) for c in CAPS]
    assert got == ["she carries a bag", "grey trousers and black shoes", "jeans"]


def test_word_level_matches_ivt() -> None:
    # IVT ImageDatasetLevelData.__getitem__ text logic after random.seed(11).
    rng = random.Random(11)
    cases = [(ATTS, CAPS[0]), ({}, CAPS[2]), (ATTS, CAPS[0]), ({}, CAPS[1])]
    got = [word_level_text(a, c, rng) for a, c in cases]
    assert got == [
        "red shoes,white shirt,short black hair,black pants",
        "he wears glasses",
        "white shirt,short black hair,red shoes,black pants",
        "grey trousers and black shoes",
    ]


def test_text_levels_fall_back_to_caption() -> None:
    rng = random.Random(0)
    assert phrase_level_text("a b.", rng) == "a b."
    assert word_level_text({}, "short", rng) == "short"
    assert word_level_text({"top": ""}, "the caption", rng) == "the caption"


def _views() -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(8, 16, generator=g, dtype=torch.float64) for _ in range(3)]
    t = [torch.randn(8, 16, generator=g, dtype=torch.float64) for _ in range(3)]
    return v, t, torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])


def test_parity_with_ivt_cmpm_on_concatenation() -> None:
    # IVT loss/cmps_loss.Loss on cat(views), cat(levels), cat([pid] * 3). The reference builds
    # its label distribution in float32 even for float64 features, hence 1e-5, not 1e-7.
    v, t, pid = _views()
    v = [x.requires_grad_() for x in v]
    loss = MultiLevelAlignmentLoss()(v, t, pid)
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    assert loss.item() == pytest.approx(23.652364553400936, abs=1e-5)
    grads = torch.cat([x.grad for x in v if x.grad is not None])
    assert grads.sum().item() == pytest.approx(0.561626257771644, abs=1e-5)
    assert grads.abs().sum().item() == pytest.approx(11.719647569940856, abs=1e-5)


def test_equals_cmpm_with_repeated_pids_and_cross_level_positives() -> None:
    v, t, pid = _views()
    want = cmpm_loss(torch.cat(v), torch.cat(t), pid.repeat(3))
    torch.testing.assert_close(MultiLevelAlignmentLoss()(v, t, pid), want)
    none = MultiLevelAlignmentLoss(reduction="none")(v, t, pid)
    assert not isinstance(none, torch.Tensor)
    assert none.image_to_text.shape == (24,)


def test_errors() -> None:
    v, t, pid = _views()
    with pytest.raises(ValueError, match="3 views but text_levels has 2"):
        MultiLevelAlignmentLoss()(v, t[:2], pid)
    with pytest.raises(ValueError, match="has 7 rows"):
        MultiLevelAlignmentLoss()(v, [t[0], t[1], t[2][:7]], pid)
    with pytest.raises(
        ValueError,
        match=r"MultiLevelAlignmentLoss: pids has 5 entries but image_views\[0\] has 8 rows",
    ):
        MultiLevelAlignmentLoss()(v, t, pid[:5])
    with pytest.raises(
        TypeError,
        match=r"MultiLevelAlignmentLoss: pids must be an integer tensor, got torch\.float32",
    ):
        MultiLevelAlignmentLoss()(v, t, pid.float())
