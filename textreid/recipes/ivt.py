"""IVT recipes (Shu et al., ECCV 2022 Workshops, arXiv 2208.08608; released code
TencentYoutuResearch/PersonRetrieval-IVT).

Released fine-tuning settings (CUHK-PEDES / ICFG-PEDES): one single-stream ViT-B/16-sized
transformer (width 768, 12 blocks, 12 heads, modality-specific feed-forwards) at 384x128 with
overlapping patches (patch 16, stride 12), BMM token dropping up to 20 %, the multi-level
alignment CMPM as the only loss; SGD (momentum 0.9) at lr 5e-3, weight decay 1e-4, biases at
2x lr; 120 epochs, 5 linear warmup epochs from 0.01x, then cosine, stepped per epoch; batch 28
from a P x K identity sampler with K = 4; bicubic resize, pad-and-crop, flip and random
erasing with noise; seed 1234. RSTPReid used stride 16 and batch 48.

Differences from the released code, on purpose: captions are tokenised with CLIP's BPE
(49,408 ids, 77 positions) instead of BERT's WordPiece; the encoder starts from random
weights (IVT initialises from ImageNet ViT-B/16 and BERT-base and then loads its own
4M-pair pre-training, which is not available); float32 training instead of AMP; the cosine
phase decays to 0 (timm's ends at 0.002x and starts at the warmup's end without a prefix);
image normalisation uses CLIP's mean / std (IVT: 0.5 / 0.5); word- and phrase-level texts are
derived from the caption (:class:`textreid.methods.IVTMethod`); epochs are selected on the
validation split.
"""

from __future__ import annotations

from textreid.recipes import DataSettings, Recipe, register_recipe
from textreid.recipes.irra import tiny_irra
from textreid.training.optim import ParamRule
from textreid.training.trainer import TrainerConfig

__all__ = ["ivt", "tiny_ivt"]

IVT_CITATION = (
    "Xiujun Shu, Wei Wen, Haoqian Wu, Keyu Chen, Yiran Song, Ruizhi Qiao, Bo Ren and Xiao Wang. "
    "See Finer, See More: Implicit Modality Alignment for Text-based Person Retrieval. "
    "ECCV 2022 Workshops. arXiv:2208.08608"
)


def ivt() -> Recipe:
    """IVT's released fine-tuning setting: single-stream encoder, MLA + BMM, SGD 5e-3, 120 epochs."""
    return Recipe(
        name="ivt",
        method="ivt",
        model="single-stream",
        model_overrides={
            "image_size": (384, 128),
            "patch_size": 16,
            "stride": 12,
            "width": 768,
            "depth": 12,
            "heads": 12,
            "mlp_ratio": 4.0,
            "drop_ratio": 0.2,
        },
        data=DataSettings(
            image_size=(384, 128),
            batch_size=28,
            sampler="identity",
            num_instances=4,
            interpolation="bicubic",
            erase_value="random",
        ),
        trainer=TrainerConfig(
            epochs=120,
            lr=5e-3,
            weight_decay=1e-4,
            optimizer="sgd",
            momentum=0.9,
            param_rules=(ParamRule("bias", 2.0),),
            warmup_epochs=5,
            warmup_start_factor=0.01,
            schedule="cosine",
            schedule_unit="epoch",
            seed=1234,
            amp="auto",  # bf16 (fp16 + GradScaler on older GPUs); float32 on CPU
        ),
        citation=IVT_CITATION,
        notes=__doc__ or "",
    )


def tiny_ivt() -> Recipe:
    """IVT's objective on a tiny single-stream encoder with ``tiny-irra``'s data and schedule."""
    base = tiny_irra()
    return Recipe(
        name="tiny-ivt",
        method="ivt",
        model="single-stream",
        model_overrides={
            "image_size": (96, 48),
            "patch_size": 12,
            "stride": 12,
            "width": 64,
            "depth": 2,
            "heads": 4,
            "drop_ratio": 0.2,
        },
        vocabulary=base.vocabulary,
        data=base.data,
        trainer=base.trainer,
        citation=IVT_CITATION,
        notes="Tiny variant for CPUs: IVT's objective, tiny-irra's sizes and schedule.",
    )


register_recipe("ivt", ivt)
register_recipe("tiny-ivt", tiny_ivt)
