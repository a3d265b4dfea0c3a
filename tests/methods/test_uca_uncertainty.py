"""UCA's caption uncertainty tracks ambiguity: a model trained here on SynthPEDES gives a caption
with its attribute words removed a higher uncertainty than the full caption."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from textreid.data import IdentitySampler, ImageTextDataset, build_dataset, build_transforms
from textreid.data.synthetic import write_synthpedes
from textreid.heads import GaussianEmbedding
from textreid.methods import UCAMethod
from textreid.models import create_model
from textreid.text import PEDESTRIAN_ATTRIBUTE_WORDS, attribute_token_sequences
from textreid.tokenization import CLIPTokenizer

pytestmark = pytest.mark.slow

SIZE = (32, 16)
ATTRIBUTES = frozenset(PEDESTRIAN_ATTRIBUTE_WORDS)


def _strip_attributes(caption: str) -> str:
    return " ".join(
        w for w in caption.split() if re.sub(r"[^a-z-]", "", w.lower()) not in ATTRIBUTES
    )


def _train(root: Path) -> tuple[UCAMethod, CLIPTokenizer]:
    # The smallest CLIP that still learns SynthPEDES in seconds; the method's own defaults.
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(context_length=40, mask_token="<|mask|>")
    encoder = create_model(
        "tiny",
        image_size=SIZE,
        context_length=40,
        embed_dim=32,
        vision={"patch_size": 8, "width": 32, "layers": 1, "heads": 2},
        text={"width": 32, "layers": 1, "heads": 2},
    )
    method = UCAMethod(
        encoder,
        attribute_token_sequences(tokenizer.encode),
        mask_token_id=tokenizer.mask_token_id,  # type: ignore[arg-type]
        cmt_depth=1,
    )
    data = build_dataset("synthpedes", root)
    train = ImageTextDataset(
        data.train, tokenizer, build_transforms(SIZE, train=True, img_aug=False)
    )
    sampler = IdentitySampler([s.pid for s in data.train], 32, num_instances=2)
    loader = DataLoader(train, batch_size=32, sampler=sampler, drop_last=True)
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=1e-4)
    for epoch in range(14):
        sampler.set_epoch(epoch)
        for batch in loader:
            loss = method(batch).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return method.eval(), tokenizer


def test_removing_attribute_words_raises_caption_uncertainty(tmp_path: Path) -> None:
    root = tmp_path / "synthpedes"
    write_synthpedes(root, num_identities=60, images_per_identity=4, seed=0)
    method, tokenizer = _train(root)
    captions = build_dataset("synthpedes", root).test.captions
    model = method.retrieval_model()  # what a saved UCA retriever computes
    with torch.no_grad():

        def uncertainty(texts: list[str]) -> torch.Tensor:
            f = model.encode_text(tokenizer(texts))
            return GaussianEmbedding(f["mean"], f["log_var"]).uncertainty()

        full = uncertainty(captions)
        vague = uncertainty([_strip_attributes(c) for c in captions])
    gap = vague - full
    n = len(captions)
    assert n >= 40
    higher = int((gap > 0).sum())
    assert higher >= 0.8 * n, f"only {higher} of {n} ambiguous captions are more uncertain"
    # a paired t statistic: the mean gap is many standard errors above zero
    t = float(gap.mean() / (gap.std() / math.sqrt(n)))
    assert t > 5.0, f"mean gap {float(gap.mean()):.2e}, t = {t:.1f}"
