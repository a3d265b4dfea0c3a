r"""The base of the pair losses: one call signature, one validation, one name in every error.

A *pair loss* scores a batch of image features against a batch of text features under
identity labels. :class:`PairLoss` owns everything such losses share, so that a loss module
holds its formula, its hyper-parameters and its docstring:

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
from textreid.losses._common import (
    DirectionalLosses,
    check_classifier,
    check_logit_scale,
    compute_dtype,
    pid_match,
    prepare_pair,
    reduce_directional,
)

__all__ = [
    "ClassifierPairLoss",
    "Hyperparameter",
    "PairBatch",
    "PairLoss",
    "classifier_twin",
    "flag",
    "functional_twin",
    "non_negative",
    "one_of",
    "positive",
]

_V = TypeVar("_V")
_L = TypeVar("_L", bound="PairLoss")
_C = TypeVar("_C", bound="ClassifierPairLoss")

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


class PairLoss(nn.Module, abc.ABC):
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

    uses_logit_scale: ClassVar[bool] = False
    no_logit_scale_reason: ClassVar[str] = "this loss scales no similarities"
    requires_pids: ClassVar[bool] = False
    halve_mean: ClassVar[bool] = False

    reduction = Hyperparameter(_reduction)

    def __init__(self, *, reduction: Reduction = "mean", check_finite: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.check_finite = check_finite

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
        if logit_scale is not None and not self.uses_logit_scale:
            raise TypeError(f"{name}: logit_scale cannot apply: {self.no_logit_scale_reason}")
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
        # The one call of every pair loss's formula: a numerics rule for all of them (the
        # compute dtype, running outside autocast) belongs here, not in each loss.
        rows = self.compute_loss(batch)
        return reduce_directional(rows, self.reduction, name, half=self.halve_mean)

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

    def check_batch(self, batch: PairBatch) -> None:
        """Checks of a validated call that only this loss needs (none by default)."""

    @abc.abstractmethod
    def compute_loss(self, batch: PairBatch) -> DirectionalLosses:
        """The per-row values of both directions, before ``reduction``.

        Returns:
            ``DirectionalLosses(image_to_text [B_i], text_to_image [B_t])``.
        """

    def extra_repr(self) -> str:
        return ", ".join(f"{h.name}={h.__get__(self)!r}" for h in _hyperparameters(type(self)))


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
