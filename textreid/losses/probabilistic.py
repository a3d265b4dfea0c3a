"""Deprecated: the probabilistic losses now live one per module.

:mod:`textreid.losses.pcme` (PCME), :mod:`textreid.losses.csd` (PCME++),
:mod:`textreid.losses.gaussian_kl`, :mod:`textreid.losses.distribution_contrast` and
:mod:`textreid.losses.point_contrast`; import the losses from :mod:`textreid.losses` and their
functional forms from :mod:`textreid.losses.functional`. Every name this module held still
resolves, with a ``FutureWarning`` naming its new home.
"""

from __future__ import annotations

from textreid._deprecation import moved

__getattr__ = moved(
    __name__,
    {
        "CSDLoss": "textreid.losses.CSDLoss",
        "DistributionContrastLoss": "textreid.losses.DistributionContrastLoss",
        "GaussianKLLoss": "textreid.losses.GaussianKLLoss",
        "PCMELoss": "textreid.losses.PCMELoss",
        "PointContrastLoss": "textreid.losses.PointContrastLoss",
        "csd_loss": "textreid.losses.functional.csd_loss",
        "distribution_contrast_loss": "textreid.losses.functional.distribution_contrast_loss",
        "gaussian_kl_loss": "textreid.losses.functional.gaussian_kl_loss",
        "pcme_loss": "textreid.losses.functional.pcme_loss",
        "point_contrast_loss": "textreid.losses.functional.point_contrast_loss",
        "pseudo_positive_match": "textreid.losses.csd.pseudo_positive_match",
    },
    since="0.1",
    removed_in="1.0",
)
