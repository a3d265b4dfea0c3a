"""The probabilistic losses: one base, hyper-parameters passed by name, the caller's name.

Two swapped floats in a positional call (``kl_beta`` for ``uniformity_lambda``) pass mypy and
give a wrong loss silently, so each functional form builds its loss with keywords: every
hyper-parameter given to the function must reach the loss it builds. Error messages name the
class actually called, so a subclass reports its own name.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from textreid.heads import GaussianEmbedding
from textreid.losses import (
    CSDLoss,
    DirectionalLosses,
    DistributionContrastLoss,
    GaussianKLLoss,
    GaussianPairBatch,
    GaussianPairLoss,
    Hyperparameter,
    PCMELoss,
    PointContrastLoss,
)
from textreid.losses.base import count
from textreid.losses.functional import (
    csd_loss,
    distribution_contrast_loss,
    pcme_loss,
    point_contrast_loss,
)


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


PAIR_LOSSES: list[tuple[type[GaussianPairLoss], Callable[..., Any]]] = [
    (PCMELoss, pcme_loss),
    (CSDLoss, csd_loss),
    (DistributionContrastLoss, distribution_contrast_loss),
    (PointContrastLoss, point_contrast_loss),
]
# The functional forms take the values of the learned a, b where the class takes their inits.
FUNCTION_NAME = {"init_negative_scale": "negative_scale", "init_shift": "shift"}
# hyper-parameter -> a value that is not its default (and changes the loss on _batch()).
OTHER_VALUE: dict[str, object] = {
    "init_negative_scale": 3.0,
    "init_shift": 2.0,
    "num_samples": 3,
    "kl_beta": 0.1,
    "uniformity_lambda": 0.5,
    "uniformity_t": 1.5,
    "kl_on_sample_mean": True,
    "reference_sampling": True,
    "pseudo_positive_alpha": 0.7,
    "distance": "bhattacharyya",
    "temperature": 0.3,
    "objective": "sdm",
    "epsilon": 0.2,
    "chunk_size": 2,
    "intra_modal_weight": 0.25,
    "reduction": "none",
}


def _batch() -> tuple[GaussianEmbedding, GaussianEmbedding, Tensor]:
    g = torch.Generator().manual_seed(1)
    image, text = (
        GaussianEmbedding(
            torch.randn(4, 3, generator=g, dtype=torch.float64),
            torch.randn(4, 3, generator=g, dtype=torch.float64) - 1,
        )
        for _ in range(2)
    )
    return image, text, torch.tensor([0, 1, 0, 2])


def _hyperparameters(cls: type[nn.Module]) -> list[str]:
    """The constructor's arguments but check_finite (which changes no value)."""
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    return [p for p in params if p != "check_finite"]


def _value(cls: type[nn.Module], name: str) -> object:
    # CSD knows two distances only.
    return "wasserstein" if (cls, name) == (CSDLoss, "distance") else OTHER_VALUE[name]


# Hyper-parameters that only act with another one set.
CONTEXT: dict[str, dict[str, object]] = {
    "uniformity_t": {"uniformity_lambda": 0.5},
    "epsilon": {"objective": "sdm"},
}


def _call(loss: Callable[..., Any], cls: type[nn.Module], **kw: Any) -> list[Tensor]:
    image, text, pids = _batch()
    if cls in (PCMELoss, PointContrastLoss):
        kw["generator"] = torch.Generator().manual_seed(2)
    out = loss(image, text, pids, **kw)
    return list(out) if isinstance(out, DirectionalLosses) else [out]


@pytest.mark.parametrize(
    ("cls", "fn", "name"),
    [
        pytest.param(cls, fn, name, id=f"{fn.__name__}-{name}")
        for cls, fn in PAIR_LOSSES
        for name in _hyperparameters(cls)
    ],
)
def test_functional_form_passes_every_hyperparameter_by_name(
    cls: type[GaussianPairLoss], fn: Callable[..., Any], name: str
) -> None:
    value, context = _value(cls, name), CONTEXT.get(name, {})
    want = _call(cls(**{name: value}, **context), cls)
    got = _call(fn, cls, **{FUNCTION_NAME.get(name, name): value}, **context)
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    if name == "chunk_size":
        return  # bounds memory, not values: test_chunk_size_is_checked shows it arrives
    # The value matters, so a hyper-parameter dropped or swapped on the way would show.
    default = _call(cls(**context), cls)
    assert len(default) != len(want) or not all(
        torch.equal(a, b) for a, b in zip(default, want, strict=True)
    )


@pytest.mark.parametrize(("cls", "fn"), PAIR_LOSSES, ids=lambda x: getattr(x, "__name__", ""))
def test_functional_defaults_follow_the_class(
    cls: type[GaussianPairLoss], fn: Callable[..., Any]
) -> None:
    ctor = inspect.signature(cls.__init__).parameters
    function = inspect.signature(fn).parameters
    for name in [*_hyperparameters(cls), "check_finite"]:
        assert function[FUNCTION_NAME.get(name, name)].default == ctor[name].default, name
    # Every per-call argument the loss reads is an argument of the function too.
    used = {"image_samples", "text_samples", "generator"} if cls.uses_samples else set()
    used |= {"logit_scale"} if cls.uses_logit_scale else set()
    used |= {"match"} if cls.uses_match else set()
    forward = set(inspect.signature(GaussianPairLoss.forward).parameters)
    assert set(function) & forward == used | {"image", "text", "pids", "image_pids", "text_pids"}


def test_every_gaussian_pair_loss_takes_the_one_signature() -> None:
    want = list(inspect.signature(GaussianPairLoss.forward).parameters.values())
    assert [p.name for p in want] == [
        "self", "image", "text", "pids", "image_pids", "text_pids", "logit_scale",
        "image_samples", "text_samples", "generator", "match",
    ]  # fmt: skip
    for cls, _ in PAIR_LOSSES:
        assert list(inspect.signature(cls.forward).parameters.values()) == want, cls.__name__


AFFINE = "its logits -a·d + b have a learned scale a (negative_scale), no temperature to replace"
CLOSED_FORM = "this loss compares the Gaussians in closed form"
IDENTITIES = "this loss takes its positives from the identities"


@pytest.mark.parametrize(
    ("cls", "argument", "value", "reason"),
    [
        (PCMELoss, "logit_scale", 2.0, AFFINE),
        (PCMELoss, "match", torch.eye(4), IDENTITIES),
        (CSDLoss, "logit_scale", 2.0, AFFINE),
        (CSDLoss, "image_samples", torch.zeros(4, 2, 3), CLOSED_FORM),
        (CSDLoss, "generator", torch.Generator(), CLOSED_FORM),
        (DistributionContrastLoss, "text_samples", torch.zeros(4, 2, 3), CLOSED_FORM),
        (DistributionContrastLoss, "match", torch.eye(4), IDENTITIES),
        (PointContrastLoss, "match", torch.eye(4), IDENTITIES),
    ],
)
def test_arguments_that_cannot_apply_are_refused_with_a_reason(
    cls: type[GaussianPairLoss], argument: str, value: object, reason: str
) -> None:
    image, text, _ = _batch()
    message = f"{cls.__name__}: {argument} cannot apply: {reason}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        cls()(image, text, **{argument: value})


@pytest.mark.parametrize(
    ("make", "attribute", "value", "error", "message"),
    [
        (PCMELoss, "kl_beta", -1.0, ValueError, "PCMELoss: kl_beta must be >= 0, got -1.0"),
        (PCMELoss, "kl_on_sample_mean", 1, TypeError, "PCMELoss: kl_on_sample_mean must be a bool"),
        (CSDLoss, "distance", "kl", ValueError, "CSDLoss: distance must be one of"),
        (
            DistributionContrastLoss,
            "temperature",
            0.0,
            ValueError,
            "DistributionContrastLoss: temperature must be > 0",
        ),
        (PointContrastLoss, "num_samples", 0, ValueError, "PointContrastLoss: num_samples must be"),
        (GaussianKLLoss, "reduction", "avg", ValueError, "GaussianKLLoss: reduction must be one"),
    ],
)
def test_hyperparameters_are_checked_on_assignment(
    make: Callable[[], nn.Module], attribute: str, value: object, error: type, message: str
) -> None:
    loss = make()
    before = getattr(loss, attribute)
    with pytest.raises(error, match=message):
        setattr(loss, attribute, value)
    assert getattr(loss, attribute) == before


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True])
def test_chunk_size_is_checked(chunk_size: object) -> None:
    image, text, pids = _batch()
    message = f"chunk_size must be None or an int >= 1, got {chunk_size!r}"
    with pytest.raises(ValueError, match=f"^DistributionContrastLoss: {message}"):
        DistributionContrastLoss(chunk_size=chunk_size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"^distribution_contrast_loss: {message}"):
        distribution_contrast_loss(image, text, pids, chunk_size=chunk_size)  # type: ignore[arg-type]


def test_repr_lists_every_hyperparameter() -> None:
    assert repr(PCMELoss(kl_beta=0.5)) == (
        "PCMELoss(num_samples=7, kl_beta=0.5, uniformity_lambda=0.0, uniformity_t=2.0, "
        "kl_on_sample_mean=False, reference_sampling=False, reduction='sum')"
    )
    assert repr(CSDLoss()) == (
        "CSDLoss(kl_beta=0.0001, pseudo_positive_alpha=0.1, distance='csd', reduction='mean')"
    )
    assert repr(DistributionContrastLoss(chunk_size=8)) == (
        "DistributionContrastLoss(distance='wasserstein', temperature=0.04, "
        "objective='infonce', epsilon=1e-08, chunk_size=8, reduction='mean')"
    )
    assert repr(PointContrastLoss()) == (
        "PointContrastLoss(num_samples=7, temperature=0.02, intra_modal_weight=1.0, "
        "reduction='mean')"
    )
    assert repr(GaussianKLLoss(reduction="sum")) == "GaussianKLLoss(reduction='sum')"
    # The learned a, b stay parameters under their names (saved checkpoints load).
    assert sorted(PCMELoss().state_dict()) == ["negative_scale", "shift"]
    assert sorted(CSDLoss().state_dict()) == ["negative_scale", "shift"]


class PointSpread(GaussianPairLoss):
    """A loss written on the base: the squared distance of each pair's first points."""

    uses_samples = True
    no_logit_scale_reason = "it measures raw distances"
    num_samples = Hyperparameter(count)

    def __init__(self, num_samples: int = 1, *, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)  # type: ignore[arg-type]
        self.num_samples = num_samples

    def sample(self, g: GaussianEmbedding, generator: torch.Generator | None) -> Tensor:
        return g.sample(self.num_samples, generator)

    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        zv, zt = batch.samples
        rows = (zv[:, 0] - zt[:, 0]).pow(2).sum(-1)
        return DirectionalLosses(rows, rows)


class Spread(GaussianPairLoss):
    """A loss that draws no samples but asks for them (a mistake the batch reports)."""

    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        zv, _ = batch.samples
        return DirectionalLosses(zv, zv)


def test_a_gaussian_loss_written_on_the_base() -> None:
    zero = torch.zeros(2, 2, dtype=torch.float64)
    image, text = GaussianEmbedding(zero, zero), GaussianEmbedding(zero + 1, zero)
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]], dtype=torch.float64)
    t = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]], dtype=torch.float64)
    loss = PointSpread()
    # Rows 1 and 1; "mean" adds the two directions' means.
    out = loss(image, text, image_samples=v, text_samples=t)
    assert out.dtype == torch.float64
    assert float(out) == 2.0
    # Without samples it draws its own from the generator: unit variances, means 0 and 1.
    g = torch.Generator().manual_seed(0)
    drawn = loss(image, text, generator=g)
    g.manual_seed(0)
    zv, zt = image.sample(1, g), text.sample(1, g)
    assert torch.equal(drawn, 2 * (zv[:, 0] - zt[:, 0]).pow(2).sum(-1).mean())
    assert repr(loss) == "PointSpread(num_samples=1, reduction='mean')"
    with pytest.raises(TypeError, match=r"^PointSpread: logit_scale cannot apply: it measures"):
        loss(image, text, logit_scale=2.0)
    with pytest.raises(ValueError, match=r"^PointSpread: image_samples has shape"):
        loss(image, text, image_samples=v[:1])
    with pytest.raises(ValueError, match=r"^PointSpread: num_samples must be an int >= 1"):
        PointSpread(num_samples=0)
    with pytest.raises(TypeError, match=r"^Spread draws no samples"):
        Spread()(image, text)


def test_the_gaussian_base_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        GaussianPairLoss()  # type: ignore[abstract]
