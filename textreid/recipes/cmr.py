"""Part-level correspondence recipes (Park, Jeong, Kim and Kwak, arXiv 2501.00318, 2024).

Experimental: only the paper's first page is readable and no code is public, so **every
setting here is ours**: CLIP ViT-B/16 at 384x128 (the paper also uses ViT-B/16 for images, but
BERT for text), 8 shared queries in a 2-layer decoder giving 2 coarse embeddings (the paper's
coarse-to-fine embeddings; their count is ours) and 6 fine part embeddings, SDM (temperature
0.02) + ID on the global features, a margin ranking loss (margin 0.2, hardest negatives) on
the coarse embeddings and the commonality-based margin ranking loss (margin 0.2, smallest
0.05, hardest negatives) on the parts, weights 1; retrieval by the global cosine plus the mean
coarse and the mean part cosine (weights 1); IRRA's optimisation (Adam eps 1e-3, lr 1e-5 with
IRRA's per-module rules, which give the decoder's cross-attention 5x, weight decay 4e-5, 60
epochs, 5 warmup epochs from 0.1x then cosine per epoch, batch 64).
"""

from __future__ import annotations

from textreid.recipes import Recipe, register_recipe
from textreid.recipes.irra import _tiny_clip_overrides, irra, tiny_irra

__all__ = ["cmr", "tiny_cmr"]

CMR_CITATION = (
    "Jicheol Park, Boseung Jeong, Dongwon Kim and Suha Kwak. Improving Text-based Person "
    "Search via Part-level Cross-modal Correspondence. arXiv:2501.00318, 2024"
)

_CMR_KWARGS: dict[str, object] = {
    "num_parts": 6,
    "num_coarse": 2,
    "decoder_depth": 2,
    "global_loss": "sdm",
    "temperature": 0.02,
    "margin": 0.2,
    "min_margin": 0.05,
    "negatives": "hardest",
    "part_score_weight": 1.0,
    "coarse_score_weight": 1.0,
}


def cmr() -> Recipe:
    """The part-level commonality ranking method on CLIP ViT-B/16 at 384x128 (experimental)."""
    return irra().replace(
        name="cmr",
        method="cmr",
        mask_token=None,
        method_kwargs=dict(_CMR_KWARGS),
        citation=CMR_CITATION,
        notes=__doc__ or "",
    )


def tiny_cmr() -> Recipe:
    """The CMR objective on the tiny CLIP config with ``tiny-irra``'s schedule."""
    return tiny_irra().replace(
        name="tiny-cmr",
        model_overrides=_tiny_clip_overrides(),
        method="cmr",
        mask_token=None,
        method_kwargs={**_CMR_KWARGS, "decoder_depth": 1},
        citation=CMR_CITATION,
        notes=(
            "Tiny variant for CPUs: the CMR objective, tiny-irra's schedule and model pooled at "
            "the class and end-of-text tokens."
        ),
    )


register_recipe("cmr", cmr)
register_recipe("tiny-cmr", tiny_cmr)
