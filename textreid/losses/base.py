r"""The bases of the pair losses: one call signature, one validation, one name in every error.

A *pair loss* scores a batch of image features against a batch of text features under
identity labels. :class:`PairLoss` owns everything such losses share, so that a loss module
holds its formula, its hyper-parameters and its docstring (:class:`GaussianPairLoss` does the
same for the losses between two batches of Gaussian embeddings):

- the call ``loss(image_feats [B_i, D], text_feats [B_t, D], pids [B] | None = None, *,
  image_pids [B_i] | None = None, text_pids [B_t] | None = None, logit_scale=None)``;
- validation of that call (ranks, dtypes, widths, rows, devices, ids, finite values under
  ``check_finite``), before any computation;
- the logit scale: the call's ``logit_scale`` or the loss's default (``1/temperature``), or a
  clear error for a loss that scales nothing;
- ``reduction`` of the per-row values the loss computes;
- the name in errors: the class actually called, so ``class MySDM(SDMLoss)`` reports
  ``MySDM: ...``, and :func:`functional_twin` gives each functional form its own name.

Writing a loss::

    class MarginSDM(PairLoss):
        uses_logit_scale = True
        temperature = Hyperparameter(check_temperature)
        margin = Hyperparameter(non_negative)

        def __init__(self, temperature=0.02, margin=0.1, *, reduction="mean", check_finite=True):
            super().__init__(reduction=reduction, check_finite=check_finite)
            self.temperature = temperature  # validated on every assignment
            self.margin = margin

        def default_logit_scale(self):
            return 1.0 / self.temperature

        def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
            logits = cosine_matrix(batch.image_feats, batch.text_feats, batch.dtype)
            ...  # per-row values of both directions
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar, cast, overload

import torch
from torch import Tensor, nn

from textreid._checks import Reduction, check_choice, check_positive, check_reduction
from textreid._numerics import float32_region
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import (
    DirectionalLosses,
    check_classifier,
    check_logit_scale,
    compute_dtype,
    pid_match,
    prepare_pair,
    reduce_directional,
)
from textreid.losses._gaussian import (
    check_given_samples,
    check_match,
    checked_loss,
    prepare_gaussian_pair,
)

__all__ = [
    "ClassifierPairLoss",
    "GaussianPairBatch",
    "GaussianPairLoss",
    "Hyperparameter",
    "PairBatch",
    "PairLoss",
    "affine_twin",
    "classifier_twin",
    "count",
    "flag",
    "functional_twin",
    "non_negative",
    "one_of",
    "optional_count",
    "positive",
]

_V = TypeVar("_V")
_L = TypeVar("_L", bound="_Loss")
_C = TypeVar("_C", bound="ClassifierPairLoss")
_A = TypeVar("_A", bound="_AffineLogits")

Check = Callable[[Any, str, str], _V]
"""A validator: ``check(value, argument_name, caller_name)`` returns the value or raises."""


class Hyperparameter(Generic[_V]):
    """A hyper-parameter of a :class:`PairLoss`, declared once on the class.

    Every assignment (the constructor's included) is validated by ``check`` with the name of
    the class actually used, so a bad value raises at once, for ``loss.temperature = 0`` too,
    instead of at the next call. ``extra_repr`` lists the declared hyper-parameters.

    Args:
        check: ``check(value, name, caller)`` returning the (possibly converted) value.
    """

    def __init__(self, check: Check[_V]) -> None:
        self.check = check
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Hyperparameter[_V]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _V: ...

    def __get__(self, obj: object, owner: type | None = None) -> Hyperparameter[_V] | _V:
        if obj is None:
            return self
        try:
            return cast(_V, vars(obj)[self.name])
        except KeyError:
            raise AttributeError(f"{type(obj).__name__} has no {self.name} yet") from None

    def __set__(self, obj: object, value: _V) -> None:
        vars(obj)[self.name] = self.check(value, self.name, type(obj).__name__)


def positive(value: float, name: str, fn: str) -> float:
    """Validator: a real number ``> 0``."""
    check_positive(value, name, fn)
    return value


def non_negative(value: float, name: str, fn: str) -> float:
    """Validator: a real number ``>= 0``."""
    check_positive(value, name, fn, allow_zero=True)
    return value


def flag(value: bool, name: str, fn: str) -> bool:
    """Validator: a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__}")
    return value


def count(value: int, name: str, fn: str) -> int:
    """Validator: an ``int >= 1`` (a ``bool`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be an int >= 1, got {value!r}")
    return value


def optional_count(value: int | None, name: str, fn: str) -> int | None:
    """Validator: ``None`` or an ``int >= 1``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{fn}: {name} must be None or an int >= 1, got {value!r}")
    return value


def one_of(choices: Sequence[str]) -> Check[str]:
    """Validator factory: one of ``choices``."""

    def check(value: str, name: str, fn: str) -> str:
        return check_choice(value, name, fn, choices)

    return check


def _reduction(value: str, name: str, fn: str) -> Reduction:
    check_reduction(value, fn)
    return cast(Reduction, value)


class PairBatch(NamedTuple):
    """A validated call of a :class:`PairLoss`, as its ``compute_loss`` receives it.

    Attributes:
        image_feats: ``[B_i, D]`` floating features, as given (neither cast nor normalised).
        text_feats: ``[B_t, D]``, same width and device.
        image_pids: ``[B_i]`` int64 identities (``arange(B)`` for instance labels).
        text_pids: ``[B_t]`` int64 identities.
        logit_scale: the multiplier of cosines: the call's ``logit_scale`` (validated; a
            tensor is clamped into ``[1e-4, 1e4]``) or the loss's default; ``1.0`` for a loss
            that uses no scale.
        dtype: the dtype to compute in: float32, or float64 when a feature tensor is float64
            (:func:`~textreid._numerics.compute_dtype`).
        name: the name errors use (the class actually called, or the functional form's).
    """

    image_feats: Tensor
    text_feats: Tensor
    image_pids: Tensor
    text_pids: Tensor
    logit_scale: float | Tensor
    dtype: torch.dtype
    name: str

    @property
    def match(self) -> Tensor:
        """Bool ``[B_i, B_t]``: ``True`` where image ``i`` and caption ``j`` share an identity."""
        return pid_match(self.image_pids, self.text_pids)


class _Loss(nn.Module):
    """What every loss on these bases has: ``reduction``, ``check_finite`` and a repr of its
    declared hyper-parameters."""

    reduction = Hyperparameter(_reduction)

    def __init__(self, *, reduction: Reduction = "mean", check_finite: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return ", ".join(f"{h.name}={h.__get__(self)!r}" for h in _hyperparameters(type(self)))


class _ScaledLoss(_Loss):
    """The logit scale of a pair loss: the call's, the loss's default, or refused with a reason."""

    uses_logit_scale: ClassVar[bool] = False
    no_logit_scale_reason: ClassVar[str] = "this loss scales no similarities"

    def _logit_scale(
        self, name: str, logit_scale: float | Tensor | None, device: torch.device
    ) -> float | Tensor:
        if not self.uses_logit_scale:
            return 1.0
        if logit_scale is None:
            logit_scale = self.default_logit_scale()
            if not isinstance(logit_scale, Tensor):
                return logit_scale  # 1/τ of a validated τ
        # A learned scale (a tensor) is checked like a given one.
        return check_logit_scale(name, logit_scale, device, finite=self.check_finite)

    def default_logit_scale(self) -> float | Tensor:
        """The scale of a call without ``logit_scale`` (``1/temperature``, or a learned
        one-element tensor); only asked when :attr:`uses_logit_scale` is true."""
        raise NotImplementedError(
            f"{type(self).__name__} sets uses_logit_scale but defines no default_logit_scale"
        )


def _refuse(name: str, given: Sequence[tuple[str, object, bool, str]]) -> None:
    """``TypeError`` for the first ``(argument, value, applies, reason)`` given that cannot apply."""
    for argument, value, applies, reason in given:
        if value is not None and not applies:
            raise TypeError(f"{name}: {argument} cannot apply: {reason}")


class PairLoss(_ScaledLoss, abc.ABC):
    r"""Base of the losses between ``image_feats [B_i, D]`` and ``text_feats [B_t, D]``.

    A subclass implements :meth:`compute_loss` (the per-row values of both directions) and
    declares its hyper-parameters with :class:`Hyperparameter`; this class owns the call
    signature, its validation, the logit scale, ``reduction`` and the name in errors (the
    class actually called). See the module docstring for an example.

    Class attributes a subclass sets:
        uses_logit_scale: ``True`` when the loss multiplies cosines by a scale (``1/τ``); a
            call's ``logit_scale`` then replaces :meth:`default_logit_scale`. Otherwise a
            ``logit_scale`` is refused with ``TypeError`` giving :attr:`no_logit_scale_reason`.
        no_logit_scale_reason: why ``logit_scale`` cannot mean anything for this loss.
        requires_pids: ``True`` when instance labels (``pids=None``) cannot apply.
        halve_mean: ``True`` for the CLIP convention: ``"mean"`` and ``"sum"`` are halved.

    Args:
        reduction: ``"mean"`` (the paper's), ``"sum"`` or ``"none"`` (a
            :class:`~textreid.losses.DirectionalLosses` of ``[B_i]`` and ``[B_t]`` row values).
        check_finite: check the features (and a tensor ``logit_scale``) for NaN/inf; the
            value checks follow :func:`textreid.eager_checks`'s policy.
    """

    requires_pids: ClassVar[bool] = False
    halve_mean: ClassVar[bool] = False

    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
        logit_scale: float | Tensor | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring for shapes and dtypes."""
        name = type(self).__name__
        _refuse(
            name, [("logit_scale", logit_scale, self.uses_logit_scale, self.no_logit_scale_reason)]
        )
        ip, tp = prepare_pair(
            name, image_feats, text_feats, pids, image_pids, text_pids,
            finite=self.check_finite, default_instance=not self.requires_pids,
        )  # fmt: skip
        batch = PairBatch(
            image_feats,
            text_feats,
            ip,
            tp,
            self._logit_scale(name, logit_scale, image_feats.device),
            compute_dtype(image_feats, text_feats),
            name,
        )
        self.check_batch(batch)
        # The one call of every pair loss's formula, so the numerics rule is kept here for all
        # of them: outside autocast (which would recast the similarity products to half after
        # the loss upcast its inputs), in batch.dtype. The features stay as given, so that
        # their normalisation floors the norm for the dtype their gradient lands in.
        with float32_region(image_feats, text_feats):
            rows = self.compute_loss(batch)
            return reduce_directional(rows, self.reduction, name, half=self.halve_mean)

    def check_batch(self, batch: PairBatch) -> None:
        """Checks of a validated call that only this loss needs (none by default)."""

    @abc.abstractmethod
    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        """The per-row values of both directions, before ``reduction``.

        Returns:
            ``DirectionalLosses(image_to_text [B_i], text_to_image [B_t])``.
        """


def _hyperparameters(cls: type) -> Iterator[Hyperparameter[Any]]:
    """Declared hyper-parameters, the most derived class's first, each in declaration order."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            if isinstance(member, Hyperparameter) and name not in seen:
                seen.add(name)
                yield member


class ClassifierPairLoss(PairLoss):
    """A :class:`PairLoss` that classifies identities with a ``[C, D]`` classifier.

    Identities are required (they are the classes, in ``0..C-1``) and there is no temperature
    to replace. A subclass implements :meth:`classifier_weights`.
    """

    requires_pids = True
    no_logit_scale_reason = "a classifier's logits W·x (+ b) have no temperature to replace"

    @abc.abstractmethod
    def classifier_weights(self) -> tuple[Tensor, Tensor | None]:
        """The classifier's ``weight [C, D]`` and ``bias [C]`` (or ``None``)."""

    def check_batch(self, batch: PairBatch) -> None:
        weight, _ = self.classifier_weights()
        # With pids both sides hold the same tensor: one range check is enough.
        ids: tuple[Tensor, ...] = (batch.image_pids,)
        if batch.text_pids is not batch.image_pids:
            ids = (batch.image_pids, batch.text_pids)
        check_classifier(batch.name, weight, batch.image_feats, *ids)


class _GivenClassifier(ClassifierPairLoss):
    """A classifier loss whose weights are given (the functional forms) instead of owned."""

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        # The loss's own __init__ would allocate and initialise a classifier.
        PairLoss.__init__(self, reduction=reduction, check_finite=check_finite)
        self._weights = (weight, bias)

    def classifier_weights(self) -> tuple[Tensor, Tensor | None]:
        return self._weights


class GaussianPairBatch(NamedTuple):
    """A validated call of a :class:`GaussianPairLoss`, as its ``compute_loss`` receives it.

    Attributes:
        image: ``[B_i, D]`` :class:`~textreid.heads.GaussianEmbedding` in the compute dtype
            (float32, or float64 when an input is float64).
        text: ``[B_t, D]``, same width, device and dtype.
        image_pids: ``[B_i]`` int64 identities (``arange(B)`` for instance labels).
        text_pids: ``[B_t]`` int64 identities.
        logit_scale: as :attr:`PairBatch.logit_scale`; ``1.0`` for a loss that uses no scale.
        image_samples: ``[B_i, K, D]`` points in the compute dtype, the call's or drawn by
            :meth:`GaussianPairLoss.sample`; ``None`` for a loss that draws no samples.
        text_samples: ``[B_t, K', D]``, likewise.
        labels: the call's ``match`` ``[B_i, B_t]`` in the compute dtype, or ``None``.
        input_dtype: the dtype of the caller's ``image.mean``, where the gradients land.
        name: the name errors use (the class actually called, or the functional form's).
    """

    image: GaussianEmbedding
    text: GaussianEmbedding
    image_pids: Tensor
    text_pids: Tensor
    logit_scale: float | Tensor
    image_samples: Tensor | None
    text_samples: Tensor | None
    labels: Tensor | None
    input_dtype: torch.dtype
    name: str

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype."""
        return self.image.mean.dtype

    @property
    def match(self) -> Tensor:
        """Bool ``[B_i, B_t]``: ``True`` where image ``i`` and caption ``j`` share an identity."""
        return pid_match(self.image_pids, self.text_pids)

    @property
    def samples(self) -> tuple[Tensor, Tensor]:
        """``(image_samples, text_samples)``, for a loss that sets ``uses_samples``."""
        if self.image_samples is None or self.text_samples is None:
            raise TypeError(f"{self.name} draws no samples: it does not set uses_samples")
        return self.image_samples, self.text_samples


class GaussianPairLoss(_ScaledLoss, abc.ABC):
    r"""Base of the losses between two batches of Gaussian embeddings, image first.

    The :class:`PairLoss` of probabilistic embeddings: a subclass implements
    :meth:`compute_loss` and declares its hyper-parameters with :class:`Hyperparameter`; this
    class owns the one call signature, its validation, the logit scale, the samples,
    ``reduction``, the overflow check of the result and the name in errors (the class actually
    called). A per-call argument that cannot mean anything for a loss is refused with
    ``TypeError`` giving the loss's reason.

    Class attributes a subclass sets:
        uses_logit_scale, no_logit_scale_reason: as for :class:`PairLoss`.
        uses_samples: ``True`` when the loss works on points drawn from the Gaussians: the
            call's ``image_samples`` / ``text_samples``, or :meth:`sample`'s with the call's
            ``generator``. Otherwise those three are refused with :attr:`no_samples_reason`.
        uses_match: ``True`` when a ``[B_i, B_t]`` ``match`` may replace the identities;
            otherwise it is refused with :attr:`no_match_reason`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (a
            :class:`~textreid.losses.DirectionalLosses` of ``[B_i]`` and ``[B_t]`` row values,
            in which per-item regularisers are added to their own row).
        check_finite: raise on NaN/inf inputs (and given samples) and on values that overflow
            (an extra host sync).

    Call arguments:
        image, text: :class:`~textreid.heads.GaussianEmbedding` ``[B_i, D]``, ``[B_t, D]``.
        pids / image_pids, text_pids: identities (default: instance labels).
        logit_scale: a multiplier replacing the loss's ``1/τ`` for this call.
        image_samples, text_samples: ``[B_i, K, D]``, ``[B_t, K', D]`` points (e.g. drawn by
            the encoder); otherwise the loss draws them.
        generator: the RNG of the points the loss draws.
        match: ``[B_i, B_t]`` labels instead of identities (not together with ``pids``).
    """

    uses_samples: ClassVar[bool] = False
    no_samples_reason: ClassVar[str] = "this loss compares the Gaussians in closed form"
    uses_match: ClassVar[bool] = False
    no_match_reason: ClassVar[str] = "this loss takes its positives from the identities"

    def forward(
        self,
        image: GaussianEmbedding,
        text: GaussianEmbedding,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
        logit_scale: float | Tensor | None = None,
        image_samples: Tensor | None = None,
        text_samples: Tensor | None = None,
        generator: torch.Generator | None = None,
        match: Tensor | None = None,
    ) -> Tensor | DirectionalLosses:
        """Compute the loss; see the class docstring for shapes and dtypes."""
        name, finite = type(self).__name__, self.check_finite
        sampling, no_samples = self.uses_samples, self.no_samples_reason
        _refuse(name, [
            ("logit_scale", logit_scale, self.uses_logit_scale, self.no_logit_scale_reason),
            ("image_samples", image_samples, sampling, no_samples),
            ("text_samples", text_samples, sampling, no_samples),
            ("generator", generator, sampling, no_samples),
            ("match", match, self.uses_match, self.no_match_reason),
        ])  # fmt: skip
        img, txt, ip, tp = prepare_gaussian_pair(
            name, image, text, pids, image_pids, text_pids, finite=finite
        )
        labels = None if match is None else check_match(name, match, img, txt, pids, image_pids)
        scale = self._logit_scale(name, logit_scale, img.mean.device)
        # The image's points come first from the generator.
        zs_v = self._points(name, img, image_samples, "image_samples", generator)
        zs_t = self._points(name, txt, text_samples, "text_samples", generator)
        batch = GaussianPairBatch(
            img, txt, ip, tp, scale, zs_v, zs_t, labels, image.mean.dtype, name
        )
        self.check_batch(batch)
        # As PairLoss: the distances, logits and softmaxes of every subclass outside autocast.
        with float32_region(img.mean, txt.mean):
            out = reduce_directional(self.compute_loss(batch), self.reduction, name)
            if isinstance(out, Tensor):
                term = self.batch_term(batch)
                if term is not None:
                    out = out + term
        return checked_loss(name, out, finite)

    def _points(
        self,
        name: str,
        g: GaussianEmbedding,
        given: Tensor | None,
        argument: str,
        generator: torch.Generator | None,
    ) -> Tensor | None:
        if not self.uses_samples:
            return None
        if given is None:
            return self.sample(g, generator)
        return check_given_samples(name, given, g, argument, self.check_finite).to(g.mean.dtype)

    def sample(self, g: GaussianEmbedding, generator: torch.Generator | None) -> Tensor:
        """``[B, K, D]`` points of ``g`` (in the compute dtype) for a call without samples;
        only asked when :attr:`uses_samples` is true."""
        raise NotImplementedError(f"{type(self).__name__} sets uses_samples but defines no sample")

    def check_batch(self, batch: GaussianPairBatch) -> None:
        """Checks of a validated call that only this loss needs (none by default)."""

    @abc.abstractmethod
    def compute_loss(self, batch: GaussianPairBatch) -> DirectionalLosses:
        """The per-row values of both directions, before ``reduction``.

        Returns:
            ``DirectionalLosses(image_to_text [B_i], text_to_image [B_t])``.
        """

    def batch_term(self, batch: GaussianPairBatch) -> Tensor | None:
        """A term of the whole batch added to the reduced loss (``None``: none). It has no
        row, so a loss with one refuses ``reduction="none"`` in :meth:`check_batch`."""
        return None


class _AffineLogits(GaussianPairLoss):
    """A Gaussian pair loss with PCME's learned match logits ``-a·d + b`` (``a`` is
    ``negative_scale``, ``b`` is ``shift``, both 0-d parameters)."""

    no_logit_scale_reason = (
        "its logits -a·d + b have a learned scale a (negative_scale), no temperature to replace"
    )

    def __init__(
        self,
        init_negative_scale: float,
        init_shift: float,
        *,
        reduction: Reduction = "mean",
        check_finite: bool = True,
    ) -> None:
        super().__init__(reduction=reduction, check_finite=check_finite)
        self.negative_scale = nn.Parameter(torch.tensor(float(init_negative_scale)))
        self.shift = nn.Parameter(torch.tensor(float(init_shift)))

    def affine(self) -> tuple[Tensor | float, Tensor | float]:
        """``(a, b)`` of the match logits ``-a·d + b``."""
        return self.negative_scale, self.shift


class _GivenAffine(_AffineLogits):
    """An affine-logit loss whose ``a`` and ``b`` are given (the functional forms), not learned."""

    def __init__(
        self, negative_scale: Tensor | float, shift: Tensor | float, **hyperparameters: Any
    ) -> None:
        # The loss's own __init__ sets its hyper-parameters (its unused a, b are two scalars).
        super().__init__(**hyperparameters)
        self._given = (negative_scale, shift)

    def affine(self) -> tuple[Tensor | float, Tensor | float]:
        return self._given


def functional_twin(cls: type[_L], name: str) -> type[_L]:
    """The class behind the functional form ``name`` of ``cls``: a subclass named ``name``.

    Errors name the class actually called, so the function's errors carry its own name. The
    function builds one (cheap) instance per call and calls its ``forward`` directly: the
    instance is private, so it has no hooks for ``nn.Module.__call__`` to run.
    """
    return cast(
        "type[_L]", type(name, (cls,), {"__module__": cls.__module__, "__qualname__": name})
    )


def classifier_twin(cls: type[_C], name: str) -> type[_GivenClassifier]:
    """:func:`functional_twin` for a :class:`ClassifierPairLoss`: the classifier's weights are
    constructor arguments, ``(weight, bias=None, *, reduction, check_finite)``."""
    ns = {"__module__": cls.__module__, "__qualname__": name}
    return cast("type[_GivenClassifier]", type(name, (_GivenClassifier, cls), ns))


def affine_twin(cls: type[_A], name: str) -> type[_GivenAffine]:
    """:func:`functional_twin` for a loss with learned match logits ``-a·d + b``: the values
    of ``a`` and ``b`` come first, ``(negative_scale, shift, **hyper-parameters)``."""
    ns = {"__module__": cls.__module__, "__qualname__": name}
    return cast("type[_GivenAffine]", type(name, (_GivenAffine, cls), ns))
