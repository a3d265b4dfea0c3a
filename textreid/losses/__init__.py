"""The loss zoo: one module per paper concept, each loss importable on its own.

Every matching loss takes ``image_feats`` first and ``text_feats`` second, plus
``pids=None, *, image_pids=None, text_pids=None``; see each class for its paper and formula.
Functional forms live in :mod:`textreid.losses.functional`.
"""

from __future__ import annotations

from textreid.losses._common import DirectionalLosses
from textreid.losses.asdm import ASDMLoss
from textreid.losses.cmpm import CMPCLoss, CMPMLoss
from textreid.losses.combine import LossOutput, WeightedSum
from textreid.losses.distributed import gather_features, gather_with_grad
from textreid.losses.id import IDLoss
from textreid.losses.infonce import InfoNCELoss
from textreid.losses.sdm import SDMLoss
from textreid.losses.triplet import TripletLoss

__all__ = [
    "ASDMLoss",
    "CMPCLoss",
    "CMPMLoss",
    "DirectionalLosses",
    "IDLoss",
    "InfoNCELoss",
    "LossOutput",
    "SDMLoss",
    "TripletLoss",
    "WeightedSum",
    "gather_features",
    "gather_with_grad",
]
