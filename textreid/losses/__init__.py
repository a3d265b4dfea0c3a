"""The loss zoo: one module per paper concept, each loss importable on its own.

Every matching loss takes ``image_feats`` first and ``text_feats`` second, plus
``pids=None, *, image_pids=None, text_pids=None``; see each class for its paper and formula.
Functional forms live in :mod:`textreid.losses.functional`.
"""

from __future__ import annotations

from textreid.losses._common import DirectionalLosses
from textreid.losses.asdm import ASDMLoss
from textreid.losses.attribute_mask import AttributeMaskReconstructionLoss
from textreid.losses.cmpm import CMPCLoss, CMPMLoss
from textreid.losses.combine import LossOutput, WeightedSum
from textreid.losses.commonality import CommonalityMarginRankingLoss, part_commonality
from textreid.losses.distributed import gather_features, gather_with_grad
from textreid.losses.efa import EFALoss
from textreid.losses.id import IDLoss
from textreid.losses.infonce import InfoNCELoss
from textreid.losses.mla import MultiLevelAlignmentLoss, phrase_level_text, word_level_text
from textreid.losses.mlm import MLMLoss, mask_for_mlm
from textreid.losses.probabilistic import (
    CSDLoss,
    DistributionContrastLoss,
    GaussianKLLoss,
    PCMELoss,
    PointContrastLoss,
)
from textreid.losses.sdm import SDMLoss
from textreid.losses.triplet import TripletLoss

__all__ = [
    "ASDMLoss",
    "AttributeMaskReconstructionLoss",
    "CMPCLoss",
    "CMPMLoss",
    "CSDLoss",
    "CommonalityMarginRankingLoss",
    "DirectionalLosses",
    "DistributionContrastLoss",
    "EFALoss",
    "GaussianKLLoss",
    "IDLoss",
    "InfoNCELoss",
    "LossOutput",
    "MLMLoss",
    "MultiLevelAlignmentLoss",
    "PCMELoss",
    "PointContrastLoss",
    "SDMLoss",
    "TripletLoss",
    "WeightedSum",
    "gather_features",
    "gather_with_grad",
    "mask_for_mlm",
    "part_commonality",
    "phrase_level_text",
    "word_level_text",
]
