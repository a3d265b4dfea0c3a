"""Trainable retrieval methods: an encoder, training heads and a loss from the zoo.

Each method maps a training batch (``images``, ``text_ids``, ``pids``, ...) to a
:class:`~textreid.losses.LossOutput` and exposes ``encode_image`` / ``encode_text`` for
retrieval. Each module registers its method (:func:`register_method`) under the name that
recipes (:mod:`textreid.recipes`) give, with a builder taking a :class:`MethodContext`.
"""

from __future__ import annotations

from textreid._deprecation import moved
from textreid.methods.base import (
    DualEncoderMethod,
    MethodContext,
    RetrievalMethod,
    get_method_builder,
    list_methods,
    register_method,
    require_batch_keys,
)
from textreid.methods.cmr import CMRMethod, CMRWeights
from textreid.methods.fmfa import FMFAMethod, FMFAWeights
from textreid.methods.irra import IRRAMethod, IRRAWeights
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
    "MethodContext",
    "RetrievalMethod",
    "UCAMethod",
    "UCAWeights",
    "get_method_builder",
    "list_methods",
    "register_method",
    "require_batch_keys",
]

__getattr__ = moved(
    __name__,
    {
        "convert_irra_checkpoint": "textreid.convert.convert_irra_checkpoint",
        "irra_to_textreid": "textreid.models.convert.irra_to_textreid",
    },
    since="0.1",
    removed_in="1.0",
)
