"""The probabilistic losses: one module each, hyper-parameters passed by name, the caller's name.

Two swapped floats in a positional call (``kl_beta`` for ``uniformity_lambda``) pass mypy and
give a wrong loss silently, so every private core takes its hyper-parameters keyword-only.
Error messages name the class actually called, so a subclass reports its own name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from textreid.heads import GaussianEmbedding
from textreid.losses import (
    CSDLoss,
    DistributionContrastLoss,
    GaussianKLLoss,
    PCMELoss,
    PointContrastLoss,
    csd,
    distribution_contrast,
    gaussian_kl,
    pcme,
    point_contrast,
)

# (core, number of leading positional inputs: the calling function's name and the embeddings)
CORES: list[tuple[Callable[..., Any], int]] = [
    (pcme._pcme, 3),
    (pcme._check_pcme_args, 1),
    (csd._csd, 3),
    (csd._check_csd_args, 1),
    (distribution_contrast._distribution_contrast, 3),
    (distribution_contrast._check_contrast_args, 1),
    (point_contrast._point_contrast, 3),
    (point_contrast._check_point_args, 1),
    (gaussian_kl._gaussian_kl, 2),
]


@pytest.mark.parametrize(("core", "leading"), [pytest.param(c, n, id=c.__name__) for c, n in CORES])
def test_cores_take_hyperparameters_by_keyword_only(core: Callable[..., Any], leading: int) -> None:
    params = list(inspect.signature(core).parameters.values())
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:leading])
    positional = [p.name for p in params[leading:] if p.kind is not p.KEYWORD_ONLY]
    assert not positional, f"{core.__name__} takes {positional} positionally"


def _gaussians() -> tuple[GaussianEmbedding, GaussianEmbedding]:
    g = torch.Generator().manual_seed(0)
    return tuple(  # type: ignore[return-value]
        GaussianEmbedding(torch.randn(3, 4, generator=g), torch.zeros(3, 4)) for _ in range(2)
    )


@pytest.mark.parametrize(
    "cls",
    [PCMELoss, CSDLoss, DistributionContrastLoss, PointContrastLoss, GaussianKLLoss],
    ids=lambda c: c.__name__,
)
def test_a_subclass_reports_its_own_name(cls: type[nn.Module]) -> None:
    sub = type(f"My{cls.__name__}", (cls,), {})
    with pytest.raises(ValueError, match=rf"^My{cls.__name__}: reduction must be one of"):
        sub(reduction="avg")
    image, text = _gaussians()
    inputs = (image.mean,) if cls is GaussianKLLoss else (image.mean, text)
    with pytest.raises(TypeError, match=rf"^My{cls.__name__}: \w+ must be a GaussianEmbedding"):
        sub()(*inputs)
