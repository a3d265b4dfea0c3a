"""UCA-style recipes (Deng, Chen, Li and Tang, Visual Intelligence 2025,
doi:10.1007/s44267-025-00078-x).

The paper's code, formulas and hyper-parameters are not public: **every setting here is
ours**. The model and optimisation are IRRA's (CLIP ViT-B/16 at 384x128, Adam eps 1e-3, lr
1e-5 with IRRA's per-module rules, weight decay 4e-5, 60 epochs, 5 warmup epochs from 0.1x
then cosine per epoch, batch 64), so the UCA objective can be compared with IRRA's on equal
terms. Objective: distribution contrast (expected likelihood kernel, temperature 0.04), point
contrast (7 points, temperature 0.02, intra-modal weight 1), uncertainty-weighted
reconstruction of attribute words masked at random (each occurrence with probability 0.5)
through a 4-layer cross-modal transformer, the attribute-masked captions also contrasted as
captions of their identities, and the KL divergence of every Gaussian to the unit Gaussian;
weights 1. Why these make the uncertainties track ambiguity: see
:class:`~textreid.methods.UCAMethod`.
"""

from __future__ import annotations

from textreid.recipes import Recipe, register_recipe
from textreid.recipes.irra import _tiny_clip_overrides, irra, tiny_irra

__all__ = ["tiny_uca", "uca"]

UCA_CITATION = (
    "Yifei Deng, Zhengyu Chen, Chenglong Li and Jin Tang. Uncertainty-aware coarse-to-fine "
    "alignment for text-image person retrieval. Visual Intelligence 3, 2025. "
    "doi:10.1007/s44267-025-00078-x"
)

_UCA_KWARGS: dict[str, object] = {
    "distance": "elk",
    "distribution_temperature": 0.04,
    "point_temperature": 0.02,
    "num_samples": 7,
    "intra_modal_weight": 1.0,
    "init_log_var": -5.0,
    "cmt_depth": 4,
    "mask_prob": 0.5,
}


def uca() -> Recipe:
    """The uncertainty-aware method on CLIP ViT-B/16 at 384x128 (our reading of the paper)."""
    return irra().replace(
        name="uca",
        method="uca",
        method_kwargs=dict(_UCA_KWARGS),
        citation=UCA_CITATION,
        notes=__doc__ or "",
    )


def tiny_uca() -> Recipe:
    """The UCA-style objective on the tiny CLIP config with ``tiny-irra``'s schedule."""
    return tiny_irra().replace(
        name="tiny-uca",
        model_overrides=_tiny_clip_overrides(),
        method="uca",
        method_kwargs={**_UCA_KWARGS, "cmt_depth": 1},
        citation=UCA_CITATION,
        notes=(
            "Tiny variant for CPUs: the UCA-style objective, tiny-irra's schedule and model "
            "pooled at the class and end-of-text tokens."
        ),
    )


register_recipe("uca", uca)
register_recipe("tiny-uca", tiny_uca)
