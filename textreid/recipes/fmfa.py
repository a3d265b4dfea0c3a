"""FMFA recipes (Yin et al., ACM TOMM, arXiv 2509.13754, 2025; released code yinhao1102/FMFA).

Two released code versions differ; the paper body is not public, so which one produced its
tables is unknown. ``fmfa`` follows the current release (HEAD): A-SDM alpha 0.1, EFA
temperature 1 with margins 0.1 (text) / 0.9 (patch), Adam (eps 1e-3) at a flat lr 5e-6 and
weight decay 4e-5 on every parameter, 60 epochs, 5 warmup epochs from 0.1x then cosine (per
epoch), batch 64 random sampling, CLIP ViT-B/16 at 384x128, cross-modal depth 4, all loss
weights 1. ``fmfa-v1`` is the first release: alpha 10, EFA temperature 0.1, margins 0.1 / 0.1,
lr 1e-5 with IRRA's per-module rules.

Differences from the released code, on purpose: float32 (or AMP) training instead of pure-fp16
weights; the ID classifier has one class per identity (HEAD sizes it by the number of training
captions); the global text feature and EFA's text tokens come from the clean caption (set
``method_kwargs["global_text_from_masked_caption"] = True`` for the released behaviour); epochs
are selected on the validation split.
"""

from __future__ import annotations

from dataclasses import replace

from textreid.recipes import Recipe, register_recipe
from textreid.recipes.irra import _tiny_clip_overrides, irra, tiny_irra
from textreid.training.optim import irra_param_rules

__all__ = ["fmfa", "fmfa_v1", "tiny_fmfa"]

FMFA_CITATION = (
    "Hao Yin et al. Cross-modal Full-mode Fine-grained Alignment for Text-to-Image Person Retrieval. "
    "ACM Transactions on Multimedia Computing, Communications and Applications (TOMM). "
    "arXiv:2509.13754, 2025"
)


def _fmfa_kwargs(alpha: float, efa_temperature: float, margin_patch: float) -> dict[str, object]:
    return {
        "alpha": alpha,
        "temperature": 0.02,
        "efa_temperature": efa_temperature,
        "margin_text": 0.1,
        "margin_patch": margin_patch,
        "cmt_depth": 4,
        "mlm": True,
    }


def fmfa() -> Recipe:
    """FMFA as in its current code release: A-SDM (alpha 0.1) + EFA (temperature 1, margins 0.1/0.9) + ID + MLM, flat lr 5e-6."""
    base = irra()
    return base.replace(
        name="fmfa",
        method="fmfa",
        method_kwargs=_fmfa_kwargs(alpha=0.1, efa_temperature=1.0, margin_patch=0.9),
        trainer=replace(base.trainer, lr=5e-6, weight_decay=4e-5, param_rules=()),
        citation=FMFA_CITATION,
        notes=__doc__ or "",
    )


def fmfa_v1() -> Recipe:
    """FMFA's first code release: A-SDM alpha 10, EFA temperature 0.1, margins 0.1/0.1, IRRA's lr rules."""
    base = irra()
    return base.replace(
        name="fmfa-v1",
        method="fmfa",
        method_kwargs=_fmfa_kwargs(alpha=10.0, efa_temperature=0.1, margin_patch=0.1),
        trainer=replace(base.trainer, lr=1e-5, param_rules=tuple(irra_param_rules())),
        citation=FMFA_CITATION,
        notes=__doc__ or "",
    )


def tiny_fmfa() -> Recipe:
    """FMFA's (HEAD) objective on the tiny CLIP config with ``tiny-irra``'s schedule."""
    base = tiny_irra()
    return base.replace(
        name="tiny-fmfa",
        model_overrides=_tiny_clip_overrides(),
        method="fmfa",
        method_kwargs={
            **_fmfa_kwargs(alpha=0.1, efa_temperature=1.0, margin_patch=0.9),
            "cmt_depth": 1,
        },
        citation=FMFA_CITATION,
        notes=(
            "Tiny variant for CPUs: FMFA's objective, tiny-irra's schedule and model pooled at "
            "the class and end-of-text tokens."
        ),
    )


register_recipe("fmfa", fmfa)
register_recipe("fmfa-v1", fmfa_v1)
register_recipe("tiny-fmfa", tiny_fmfa)
