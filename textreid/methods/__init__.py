"""Trainable retrieval methods: an encoder, training heads and a loss from the zoo.

Each method maps a training batch (``images``, ``text_ids``, ``pids``, ...) to a
:class:`~textreid.losses.LossOutput` and exposes ``encode_image`` / ``encode_text`` for
retrieval. Recipes (:mod:`textreid.recipes`) name a method and its settings.
"""

from __future__ import annotations

from textreid.methods.base import DualEncoderMethod, RetrievalMethod, require_batch_keys
from textreid.methods.cmr import CMRMethod, CMRWeights
from textreid.methods.fmfa import FMFAMethod, FMFAWeights
from textreid.methods.irra import (
    IRRAMethod,
    IRRAWeights,
    convert_irra_checkpoint,
    irra_to_textreid,
)
from textreid.methods.ivt import IVT_LEVELS, IVTMethod
from textreid.methods.uca import UCAMethod, UCAWeights

__all__ = [
    "IVT_LEVELS",
    "CMRMethod",
    "CMRWeights",
    "DualEncoderMethod",
    "FMFAMethod",
    "FMFAWeights",
    "IRRAMethod",
    "IRRAWeights",
    "IVTMethod",
    "RetrievalMethod",
    "UCAMethod",
    "UCAWeights",
    "convert_irra_checkpoint",
    "irra_to_textreid",
    "require_batch_keys",
]
