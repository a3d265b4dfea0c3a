"""The loss zoo: one module per paper concept, each loss importable on its own.

Every matching loss takes ``image_feats`` first and ``text_feats`` second, plus
``pids=None, *, image_pids=None, text_pids=None``; see each class for its paper and formula.
The global matching losses share one base, :class:`PairLoss`, which owns that call (with
``logit_scale=None``), its validation and ``reduction``; write a loss of your own on it. The
losses between Gaussian embeddings share :class:`GaussianPairLoss` the same way.
Functional forms live in :mod:`textreid.losses.functional`; the text preparation that some
losses consume (MLM masking, IVT's text levels, attribute words) lives in :mod:`textreid.text`.
"""

from __future__ import annotations

from textreid._deprecation import moved
from textreid.losses._common import DirectionalLosses
from textreid.losses.asdm import ASDMLoss
from textreid.losses.attribute_mask import AttributeMaskReconstructionLoss
from textreid.losses.base import (
    GaussianPairBatch,
    GaussianPairLoss,
    Hyperparameter,
    PairBatch,
    PairLoss,
)
from textreid.losses.cmpm import CMPCLoss, CMPMLoss
from textreid.losses.combine import LossOutput, WeightedSum
from textreid.losses.commonality import CommonalityMarginRankingLoss, part_commonality
from textreid.losses.csd import CSDLoss
from textreid.losses.distributed import gather_features, gather_with_grad
from textreid.losses.distribution_contrast import DistributionContrastLoss
from textreid.losses.efa import EFALoss
from textreid.losses.gaussian_kl import GaussianKLLoss
from textreid.losses.id import IDLoss
from textreid.losses.infonce import InfoNCELoss
from textreid.losses.mla import MultiLevelAlignmentLoss
from textreid.losses.mlm import MLMLoss
from textreid.losses.pcme import PCMELoss
from textreid.losses.point_contrast import PointContrastLoss
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
    "GaussianPairBatch",
    "GaussianPairLoss",
    "Hyperparameter",
    "IDLoss",
    "InfoNCELoss",
    "LossOutput",
    "MLMLoss",
    "MultiLevelAlignmentLoss",
    "PCMELoss",
    "PairBatch",
    "PairLoss",
    "PointContrastLoss",
    "SDMLoss",
    "TripletLoss",
    "WeightedSum",
    "gather_features",
    "gather_with_grad",
    "part_commonality",
]

__getattr__ = moved(
    __name__,
    {
        "mask_for_mlm": "textreid.text.mask_for_mlm",
        "phrase_level_text": "textreid.text.phrase_level_text",
        "word_level_text": "textreid.text.word_level_text",
    },
    since="0.1",
    removed_in="1.0",
)
