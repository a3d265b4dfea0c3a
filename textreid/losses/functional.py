"""Functional forms of the losses: `sdm_loss(...)` is `SDMLoss()(...)` (one implementation)."""

from __future__ import annotations

from textreid.losses.asdm import asdm_loss
from textreid.losses.attribute_mask import attribute_mask_reconstruction_loss
from textreid.losses.cmpm import cmpc_loss, cmpm_loss
from textreid.losses.csd import csd_loss
from textreid.losses.distribution_contrast import distribution_contrast_loss
from textreid.losses.gaussian_kl import gaussian_kl_loss
from textreid.losses.id import id_loss
from textreid.losses.infonce import infonce_loss
from textreid.losses.pcme import pcme_loss
from textreid.losses.point_contrast import point_contrast_loss
from textreid.losses.sdm import sdm_loss
from textreid.losses.triplet import triplet_loss

__all__ = [
    "asdm_loss",
    "attribute_mask_reconstruction_loss",
    "cmpc_loss",
    "cmpm_loss",
    "csd_loss",
    "distribution_contrast_loss",
    "gaussian_kl_loss",
    "id_loss",
    "infonce_loss",
    "pcme_loss",
    "point_contrast_loss",
    "sdm_loss",
    "triplet_loss",
]
