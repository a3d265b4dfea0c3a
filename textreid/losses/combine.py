"""Combine named losses with weights: :class:`WeightedSum` and its :class:`LossOutput`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor, nn

from textreid._checks import check_positive

__all__ = ["LossOutput", "WeightedSum"]


class LossOutput(NamedTuple):
    """A training objective's result.

    Attributes:
        total: the scalar to call ``backward()`` on (weighted sum of the terms).
        terms: per-term values, *weighted* and detached, for logging (``{"sdm": ..., "id": ...}``).
    """

    total: Tensor
    terms: dict[str, Tensor]


class WeightedSum(nn.Module):
    """A weighted sum of named loss terms, returning :class:`LossOutput`.

    Each entry of ``terms`` is either ``name: (weight, loss_module)`` (the module is called with
    the same arguments as this object) or ``name: weight`` (a *precomputed* term: its value is
    passed at call time in ``precomputed={name: tensor}``, e.g. an MLM loss computed elsewhere).
    Modules are registered as sub-modules, so ``WeightedSum(...).parameters()`` includes the
    parameters of losses that own some (:class:`~textreid.losses.IDLoss`) and ``.to(device)``
    moves them.

    Example::

        objective = WeightedSum({"sdm": (1.0, SDMLoss()), "id": (1.0, IDLoss(C, 512)), "mlm": 1.0})
        out = objective(image_feats, text_feats, pids, precomputed={"mlm": mlm_loss})
        out.total.backward(); log(out.terms)

    Every module term is called as ``term(image_feats, text_feats, pids, **extra)``: ``extra``
    holds ``image_pids`` / ``text_pids`` when given, and ``logit_scale`` when given and the term
    has a true ``uses_logit_scale`` attribute. Every :class:`~textreid.losses.PairLoss` states
    it (true for SDM, A-SDM, InfoNCE, which scale cosines by ``1/τ``; false for the others,
    which refuse a scale); a module of your own declares ``uses_logit_scale = True`` to receive
    it. Forwarding only what applies keeps one ``logit_scale`` usable with a mix of terms.

    Args:
        terms: ordered mapping ``name -> (weight, module)`` or ``name -> weight``; weights are
            non-negative floats.

    Raises:
        ValueError: an empty mapping, a negative or infinite weight, a non-scalar term (a loss
            built with ``reduction="none"``), missing or unknown precomputed terms.
        TypeError: an entry that is neither a weight nor a ``(weight, module)`` pair.
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module] | float]) -> None:
        super().__init__()
        fn = type(self).__name__
        if not terms:
            raise ValueError(f"{fn}: terms is empty; give at least one name -> (weight, loss)")
        self.weights: dict[str, float] = {}
        self.losses = nn.ModuleDict()
        self._scaled: set[str] = set()
        for name, entry in terms.items():
            if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], nn.Module):
                weight, module = entry
                self.losses[name] = module
                if getattr(module, "uses_logit_scale", False) is True:
                    self._scaled.add(name)
            elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
                weight = entry
            else:
                raise TypeError(
                    f"{fn}: terms[{name!r}] must be a weight or a (weight, nn.Module) pair, "
                    f"got {type(entry).__name__}"
                )
            check_positive(float(weight), f"the weight of {name!r}", fn, allow_zero=True)
            if not math.isfinite(weight):
                # inf * a zero term is NaN, and any infinite weight swamps the other terms
                raise ValueError(f"{fn}: the weight of {name!r} must be finite, got {weight}")
            self.weights[name] = float(weight)

    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        pids: Tensor | None = None,
        *,
        image_pids: Tensor | None = None,
        text_pids: Tensor | None = None,
        logit_scale: float | Tensor | None = None,
        precomputed: Mapping[str, Tensor] | None = None,
    ) -> LossOutput:
        """Call every module term with the same arguments and add the precomputed ones.

        Args:
            image_feats, text_feats, pids, image_pids, text_pids, logit_scale: passed to every
                module term (``logit_scale`` only to the terms that use one, see the class
                docstring).
            precomputed: values of the weight-only terms, one scalar tensor per such name.

        Returns:
            :class:`LossOutput`: ``total`` (connected to the graph) and ``terms`` (weighted,
            detached), in the order the terms were given.
        """
        fn = type(self).__name__
        given = dict(precomputed or {})
        expected = [n for n in self.weights if n not in self.losses]
        missing = [n for n in expected if n not in given]
        unknown = [n for n in given if n not in expected]
        if missing or unknown:
            raise ValueError(
                f"{fn}: precomputed must hold exactly the weight-only terms {expected}; "
                f"missing {missing}, unexpected {unknown}"
            )
        total: Tensor | None = None
        terms: dict[str, Tensor] = {}
        for name, weight in self.weights.items():
            if name in self.losses:
                # Optional arguments travel only when given, so modules of your own that take
                # only (image_feats, text_feats, pids) fit in.
                extra: dict[str, Tensor | float | None] = {}
                if image_pids is not None or text_pids is not None:
                    extra.update(image_pids=image_pids, text_pids=text_pids)
                if name in self._scaled and logit_scale is not None:
                    extra["logit_scale"] = logit_scale
                value = self.losses[name](image_feats, text_feats, pids, **extra)
            else:
                value = given[name]
            if not isinstance(value, Tensor) or value.dim() != 0:
                raise ValueError(
                    f"{fn}: term {name!r} must give a scalar tensor, got "
                    f"{type(value).__name__}; build its loss with reduction='mean' or 'sum'"
                )
            weighted = value * weight
            terms[name] = weighted.detach()
            total = weighted if total is None else total + weighted
        assert total is not None  # the constructor refuses an empty mapping
        return LossOutput(total, terms)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={w}" for n, w in self.weights.items())
