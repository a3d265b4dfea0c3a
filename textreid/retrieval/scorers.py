"""Scorers: how a method compares a query block with a gallery chunk at search time.

A model encodes each item into *features*, a mapping of named tensors that all have one row per
item (:data:`Features`): ``"global"`` ``[N, D]`` for a CLIP-style method, ``"mean"`` and
``"log_var"`` ``[N, D]`` for Gaussian embeddings, ``"parts"`` ``[N, P, D]`` (plus ``"global"``
and optionally ``"coarse"`` ``[N, Q, D]``) for part embeddings, ``"tokens"`` ``[N, L, D]`` with
``"token_mask"`` ``[N, L]`` for token-level re-ranking. A plain tensor where features are
expected means ``{"global": tensor}``.

A :class:`Scorer` turns a block of query features and a chunk of gallery features into a
``[Nq, Ng]`` score block (higher = more similar). :func:`~textreid.retrieval.topk_search`,
:func:`~textreid.retrieval.evaluate` and :class:`~textreid.retrieval.GalleryIndex` stream any
scorer over query blocks and gallery chunks, so memory stays flat in the gallery size whatever
the method. A scorer is described by a small JSON-able config (:meth:`Scorer.to_config`), which
a saved model or gallery index carries and :func:`scorer_from_config` reads back through a
registry that users can extend (:func:`register_scorer`).
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from textreid._checks import check_choice, check_features
from textreid._numerics import compute_dtype, l2_norm
from textreid._registry import Registry
from textreid.heads.gaussian import GaussianEmbedding
from textreid.heads.gaussian_distances import (
    GAUSSIAN_DISTANCES,
    GaussianDistance,
    gaussian_distance,
)

__all__ = [
    "CosineScorer",
    "Features",
    "GaussianScorer",
    "PartScorer",
    "Scorer",
    "Side",
    "as_features",
    "cat_rows",
    "features_to",
    "list_scorers",
    "num_rows",
    "register_scorer",
    "scorer_from_config",
    "slice_rows",
]

Features = Mapping[str, Tensor]
"""Named tensors of one set of items, every one rows-first ``[N, ...]`` with the same ``N``."""

Side = Literal["query", "gallery"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""Feature names: identifiers of at most 64 characters (they name tensors in saved files)."""

_MAX_CONFIG_BYTES = 64 * 1024
"""A scorer config is a handful of settings; anything larger is refused before it is read."""


def as_features(
    x: Tensor | Features, *, name: str = "features", fn: str = "as_features"
) -> dict[str, Tensor]:
    """``x`` as a features dict: a tensor becomes ``{"global": x}``; a mapping is copied.

    Only the container is checked here (string keys naming tensors, one row count); what each
    key must hold is the scorer's business (:meth:`Scorer.validate`).

    Args:
        x: a ``[N, D]`` tensor or a mapping of feature names to ``[N, ...]`` tensors.
        name: the argument's name, for errors.
        fn: the function called, for errors.

    Returns:
        A new ``dict`` (the tensors are not copied).

    Raises:
        TypeError: ``x`` is neither a tensor nor a mapping, a key is not a str, or a value is
            not a tensor.
        ValueError: an empty mapping, a key that is not an identifier of at most 64
            characters, a 0-d tensor, or tensors whose row counts differ.

    Example:
        >>> sorted(as_features(torch.zeros(3, 4)))
        ['global']
    """
    if isinstance(x, Tensor):
        out = {"global": x}
    elif isinstance(x, Mapping):
        out = dict(x)
    else:
        raise TypeError(
            f"{fn}: {name} must be a tensor or a mapping of feature names to tensors, "
            f"got {type(x).__name__}"
        )
    if not out:
        raise ValueError(f"{fn}: {name} is an empty mapping; it needs at least one tensor")
    for key, value in out.items():
        check_feature_name(key, name, fn)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{fn}: {name}[{key!r}] must be a torch.Tensor, got {type(value).__name__}"
            )
        if value.dim() == 0:
            raise ValueError(f"{fn}: {name}[{key!r}] is 0-d; features are rows-first [N, ...]")
    num_rows(out, name=name, fn=fn)
    return out


def check_feature_name(key: object, name: str, fn: str) -> None:
    """Refuse a feature name that is not an identifier of at most 64 characters (names end
    up in saved files as ``features.<name>``)."""
    if not isinstance(key, str):
        raise TypeError(f"{fn}: {name} has a key of type {type(key).__name__}; keys are str")
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"{fn}: {name} has the key {key[:80]!r}; a feature name is an identifier "
            "(letters, digits, underscores) of at most 64 characters"
        )


def num_rows(f: Features, *, name: str = "features", fn: str = "num_rows") -> int:
    """The number of items ``N`` of ``f`` (the first dimension every tensor shares).

    Raises:
        ValueError: ``f`` is empty, or its tensors have different row counts (all are named).
    """
    if not f:
        raise ValueError(f"{fn}: {name} holds no tensors")
    rows = {key: int(t.shape[0]) if t.dim() else 0 for key, t in f.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{k!r}: {n}" for k, n in rows.items())
        raise ValueError(
            f"{fn}: the tensors of {name} must have one row per item, but their row counts "
            f"differ ({listed})"
        )
    return next(iter(rows.values()))


def slice_rows(f: Features, start: int, stop: int) -> dict[str, Tensor]:
    """Rows ``start:stop`` of every tensor (views, no copy)."""
    return {key: t[start:stop] for key, t in f.items()}


def take_rows(f: Features, index: Tensor) -> dict[str, Tensor]:
    """Rows ``index`` (a 1-D integer tensor) of every tensor, gathered on each tensor's device."""
    return {key: t[index.to(t.device)] for key, t in f.items()}


def cat_rows(parts: Sequence[Features], *, fn: str = "cat_rows") -> dict[str, Tensor]:
    """Concatenate the rows of several feature sets with the same keys.

    Raises:
        ValueError: no parts, or parts whose keys differ.
    """
    if not parts:
        raise ValueError(f"{fn}: nothing to concatenate")
    keys = list(parts[0])
    for i, p in enumerate(parts[1:], 1):
        if set(p) != set(keys):
            raise ValueError(
                f"{fn}: part {i} has the keys {sorted(p)} but part 0 has {sorted(keys)}"
            )
    return {key: torch.cat([p[key] for p in parts]) for key in keys}


def features_to(
    f: Features, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Every tensor moved to ``device``; floating tensors also cast to ``dtype``.

    Masks and other non-floating tensors keep their dtype.
    """
    return {
        key: t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        for key, t in f.items()
    }


def global_tensor(x: Tensor | Features, name: str, fn: str) -> Tensor:
    """The ``[N, D]`` features of a call without scorer: ``x`` itself, or its ``"global"``
    entry when ``x`` is a mapping (anything else is returned for the caller's checks)."""
    if not isinstance(x, Mapping):
        return x
    f = as_features(x, name=name, fn=fn)
    if "global" not in f:
        raise ValueError(
            f"{fn}: {name} features have no 'global' entry (keys {sorted(f)}); without "
            "scorer= only global features are compared, so pass the scorer of the model "
            "that encoded them (e.g. scorer=GaussianScorer())"
        )
    return f["global"]


def _rank(dims: str) -> int:
    return len(dims.strip("()").split(","))


def _unit_rows(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` in ``dtype`` divided by the L2 norm of its last dimension.

    The same arithmetic as the cosine search of :mod:`textreid.retrieval.search` (an overflow-
    safe norm, floored at ``tiny`` so that a zero row scores 0 against everything).
    """
    x = x.to(dtype)
    return x / l2_norm(x, dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


def _check_weight(value: object, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value!r}")
    if float(value) < 0:
        raise ValueError(f"{fn}: {name} must be >= 0, got {value!r}")
    return float(value)


class Scorer(ABC):
    """How query features are compared with gallery features (higher = more similar).

    Subclasses name their kind (``kind``, the name in configs and the registry), the feature
    keys each side needs with their named shapes (``query_keys`` / ``gallery_keys`` and
    ``key_dims``), and implement :meth:`score`. Retrieval calls :meth:`validate` on the whole
    inputs once, then :meth:`prepare` on each query block and gallery chunk (e.g. to normalise
    rows once per chunk) and :meth:`score` on the prepared pairs of blocks.

    A scorer's settings are its constructor's keyword arguments; :meth:`to_config` writes them
    (JSON-able, with ``"kind"``) and :func:`scorer_from_config` rebuilds the scorer. Two
    scorers are equal when their configs are.

    Attributes:
        kind: the registry name.
        query_keys: feature names a query needs.
        gallery_keys: feature names a gallery item needs.
        key_dims: named shape of each key, e.g. ``{"global": "(N, D)"}``; its rank is checked.
        float_keys: keys that must hold floating tensors (the others are masks or ids).
    """

    kind: ClassVar[str]
    query_keys: ClassVar[tuple[str, ...]]
    gallery_keys: ClassVar[tuple[str, ...]]
    key_dims: ClassVar[Mapping[str, str]]

    def required_keys(self, side: Side) -> tuple[str, ...]:
        """The feature names ``side`` needs with this scorer's settings."""
        return self.query_keys if side == "query" else self.gallery_keys

    def validate(
        self,
        features: Tensor | Features,
        side: Side,
        fn: str,
        *,
        finite: bool = True,
        name: str | None = None,
    ) -> dict[str, Tensor]:
        """Check ``features`` for ``side`` and return them as a dict (extra keys are kept).

        Args:
            features: a tensor (``{"global": tensor}``) or a features mapping.
            side: ``"query"`` or ``"gallery"``.
            fn: the function called, named in errors.
            finite: also refuse NaN/inf in the keys this scorer reads (one pass over them).
            name: the argument's name in errors (default ``side``).

        Raises:
            TypeError: not features, or a key this scorer reads is not a floating tensor.
            ValueError: a missing key (the message lists the keys needed and given), a wrong
                rank, an empty set, row counts that differ, non-finite values.
        """
        arg = side if name is None else name
        f = as_features(features, name=arg, fn=fn)
        need = self.required_keys(side)
        missing = [k for k in need if k not in f]
        if missing:
            raise ValueError(
                f"{fn}: {arg} features lack {', '.join(map(repr, missing))}: "
                f"{type(self).__name__} (kind {self.kind!r}) needs {list(need)}, got "
                f"{sorted(f)}; encode them with the model this scorer belongs to"
            )
        for key in need:
            dims = self.key_dims[key]
            check_features(
                f[key], f"{arg}[{key!r}]", fn, ndim=_rank(dims), dims=dims, finite=finite
            )
        return f

    def check_pair(self, query: Features, gallery: Features, fn: str) -> None:
        """Refuse query and gallery features that cannot be compared.

        The default requires every key both sides read to have the same shape past the rows
        (widths, part counts).

        Raises:
            ValueError: the shapes differ.
        """
        for key in set(self.required_keys("query")) & set(self.required_keys("gallery")):
            q, g = query[key].shape[1:], gallery[key].shape[1:]
            if q != g:
                dims = self.key_dims[key]
                raise ValueError(
                    f"{fn}: query[{key!r}] has shape {tuple(query[key].shape)} but "
                    f"gallery[{key!r}] has {tuple(gallery[key].shape)}; {dims} must agree "
                    "past the rows (features of one model)"
                )

    def prepare(self, features: Features, side: Side) -> dict[str, Tensor]:
        """Per-block preparation of validated features (default: the keys read, unchanged).

        Called once per query block and once per gallery chunk, already on the device the
        scores are computed on; :meth:`score` receives its output.
        """
        return {key: features[key] for key in self.required_keys(side)}

    @abstractmethod
    def score(self, query: Features, gallery: Features) -> Tensor:
        """``[Nq, Ng]`` scores of prepared query features against prepared gallery features.

        Higher is more similar; float32 for half and float32 inputs, float64 for float64.
        """

    def score_pairs(self, query: Features, gallery: Features) -> Tensor:
        """``[M]`` scores of row-aligned pairs ``(query row m, gallery row m)`` (prepared).

        The default reads the diagonal of :meth:`score` on blocks of 256 pairs; subclasses
        with a cheaper pairwise form override it.
        """
        n = num_rows(query)
        step = 256
        return torch.cat(
            [
                self.score(slice_rows(query, s, s + step), slice_rows(gallery, s, s + step))
                .diagonal()
                .clone()
                for s in range(0, n, step)
            ]
        )

    def uncertainty(self, features: Features, side: Side) -> Tensor | None:
        """``[N]`` uncertainty of each item (higher = less certain), or ``None`` (default)."""
        return None

    def settings(self) -> dict[str, Any]:
        """The constructor's keyword arguments of this scorer (JSON-able); default none."""
        return {}

    def to_config(self) -> dict[str, Any]:
        """``{"kind": ..., **settings}``: JSON-able, read back by :func:`scorer_from_config`."""
        return {"kind": self.kind, **self.settings()}

    def __call__(self, query: Tensor | Features, gallery: Tensor | Features) -> Tensor:
        """The full ``[Nq, Ng]`` score matrix: validate, prepare and score in one block.

        For small sets and tests; retrieval streams blocks instead.
        """
        fn = f"{type(self).__name__}.__call__"
        q = self.validate(query, "query", fn)
        g = self.validate(gallery, "gallery", fn)
        self.check_pair(q, g, fn)
        device = next(iter(q.values())).device
        return self.score(
            self.prepare(features_to(q, device), "query"),
            self.prepare(features_to(g, device), "gallery"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scorer):
            return NotImplemented
        return type(self) is type(other) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_config(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class CosineScorer(Scorer):
    """Cosine similarity of ``"global"`` features (IRRA, FMFA, IVT, CLIP).

    ``score = <q / ‖q‖, g / ‖g‖>``; with ``normalize=False`` the plain inner product. Searches
    with this scorer take the library's fastest path (bfloat16 screening, the faiss backend),
    with the same results as a plain tensor search with ``normalize=True``.

    Args:
        normalize: L2-normalise rows first (cosine); ``False`` for inner products.

    Raises:
        TypeError: ``normalize`` is not a bool.
    """

    kind: ClassVar[str] = "cosine"
    query_keys: ClassVar[tuple[str, ...]] = ("global",)
    gallery_keys: ClassVar[tuple[str, ...]] = ("global",)
    key_dims: ClassVar[Mapping[str, str]] = {"global": "(N, D)"}

    def __init__(self, *, normalize: bool = True) -> None:
        if not isinstance(normalize, bool):
            raise TypeError(
                f"CosineScorer: normalize must be a bool, got {type(normalize).__name__}"
            )
        self.normalize = normalize

    def settings(self) -> dict[str, Any]:
        return {"normalize": self.normalize}

    def prepare(self, features: Features, side: Side) -> dict[str, Tensor]:
        x = features["global"]
        dtype = compute_dtype(x)
        return {"global": _unit_rows(x, dtype) if self.normalize else x.to(dtype)}

    def score(self, query: Features, gallery: Features) -> Tensor:
        q, g = query["global"], gallery["global"]
        dtype = compute_dtype(q, g)
        return q.to(dtype) @ g.to(dtype).T

    def score_pairs(self, query: Features, gallery: Features) -> Tensor:
        q, g = query["global"], gallery["global"]
        dtype = compute_dtype(q, g)
        return (q.to(dtype) * g.to(dtype)).sum(-1)


_BROADCAST_BUDGET = 1 << 24
"""Values a broadcasting Gaussian distance (KL, Bhattacharyya, ELK) may hold at once
(``rows x chunk x D``; 64 MiB in float32): query rows are split to stay under it."""

_MATMUL_DISTANCES = frozenset({"csd", "wasserstein"})


class GaussianScorer(Scorer):
    """Scores of probabilistic embeddings: minus a distance between diagonal Gaussians (UCA).

    ``score = -d(N_q, N_g)`` with ``d`` one of :data:`textreid.heads.GAUSSIAN_DISTANCES`
    (``"elk"`` gives the log expected likelihood itself); asymmetric distances read the query
    first (``"kl"`` is ``KL(N_q ‖ N_g)``). The default is ``"csd"``, PCME++'s closed-form
    sampled distance ``‖μ_q − μ_g‖² + Σσ_q² + Σσ_g²`` (Chun, ICLR 2024, arXiv 2305.15583): it
    ranks like the squared distance of the means while a query's own variance lowers all its
    scores alike, and costs one matrix product. The distance can be chosen at search time, on
    features encoded once.

    :meth:`uncertainty` is :meth:`textreid.heads.GaussianEmbedding.uncertainty`, the mean
    variance ``(1/D) Σ_d σ²_d`` of each item; searches return it beside the hits.

    Args:
        distance: one of :data:`~textreid.heads.GAUSSIAN_DISTANCES`.

    Raises:
        ValueError: an unknown distance.
    """

    kind: ClassVar[str] = "gaussian"
    query_keys: ClassVar[tuple[str, ...]] = ("mean", "log_var")
    gallery_keys: ClassVar[tuple[str, ...]] = ("mean", "log_var")
    key_dims: ClassVar[Mapping[str, str]] = {"mean": "(N, D)", "log_var": "(N, D)"}

    def __init__(self, *, distance: GaussianDistance = "csd") -> None:
        self.distance: GaussianDistance = check_choice(
            distance, "distance", "GaussianScorer", GAUSSIAN_DISTANCES
        )

    def settings(self) -> dict[str, Any]:
        return {"distance": self.distance}

    def validate(
        self,
        features: Tensor | Features,
        side: Side,
        fn: str,
        *,
        finite: bool = True,
        name: str | None = None,
    ) -> dict[str, Tensor]:
        f = super().validate(features, side, fn, finite=finite, name=name)
        arg = side if name is None else name
        if f["mean"].shape != f["log_var"].shape:
            raise ValueError(
                f"{fn}: {arg}['mean'] has shape {tuple(f['mean'].shape)} but "
                f"{arg}['log_var'] has {tuple(f['log_var'].shape)}; they must match"
            )
        return f

    def prepare(self, features: Features, side: Side) -> dict[str, Tensor]:
        dtype = compute_dtype(features["mean"], features["log_var"])
        return {"mean": features["mean"].to(dtype), "log_var": features["log_var"].to(dtype)}

    def _distances(self, query: Features, gallery: Features, rows: int | None) -> Tensor:
        dtype = compute_dtype(query["mean"], gallery["mean"])
        q = GaussianEmbedding(query["mean"].to(dtype), query["log_var"].to(dtype))
        g = GaussianEmbedding(gallery["mean"].to(dtype), gallery["log_var"].to(dtype))
        return gaussian_distance(q, g, self.distance, chunk_size=rows)

    def score(self, query: Features, gallery: Features) -> Tensor:
        rows = None
        if self.distance not in _MATMUL_DISTANCES:
            width = int(gallery["mean"].shape[0]) * int(gallery["mean"].shape[1])
            rows = max(1, _BROADCAST_BUDGET // max(width, 1))
        return -self._distances(query, gallery, rows)

    def uncertainty(self, features: Features, side: Side) -> Tensor:
        return GaussianEmbedding(features["mean"], features["log_var"]).uncertainty()


class PartScorer(Scorer):
    """Global plus part-level cosine similarity, fused as the part-level method does (CMR).

    With ``c(a, b)`` the cosine similarity, ``g`` the global features, ``p_k`` the ``P`` fine
    part embeddings and ``c_j`` the ``Q`` coarse ones:

    .. math::

        s(q, x) = c(g_q, g_x) + w_p \\frac{1}{P}\\sum_{k=1}^{P} c(p_{q,k}, p_{x,k})
        + w_c \\frac{1}{Q}\\sum_{j=1}^{Q} c(c_{q,j}, c_{x,j})

    Part ``k`` of a caption is compared with part ``k`` of an image only: the shared learnable
    queries align them (Park et al., "Improving Text-based Person Search via Part-level
    Cross-modal Correspondence", arXiv 2501.00318, 2024), and the per-part cosine is the
    similarity the method's ranking loss trains. Each sum is one matrix product of the
    flattened, per-part normalised embeddings.

    Args:
        part_weight: :math:`w_p`, the weight of the mean fine-part similarity.
        coarse_weight: :math:`w_c`; with a positive weight both sides need ``"coarse"``.

    Raises:
        ValueError: a weight that is negative or not a finite number.
    """

    kind: ClassVar[str] = "parts"
    query_keys: ClassVar[tuple[str, ...]] = ("global", "parts")
    gallery_keys: ClassVar[tuple[str, ...]] = ("global", "parts")
    key_dims: ClassVar[Mapping[str, str]] = {
        "global": "(N, D)",
        "parts": "(N, P, D)",
        "coarse": "(N, Q, D)",
    }

    def __init__(self, *, part_weight: float = 1.0, coarse_weight: float = 0.0) -> None:
        self.part_weight = _check_weight(part_weight, "part_weight", "PartScorer")
        self.coarse_weight = _check_weight(coarse_weight, "coarse_weight", "PartScorer")

    def settings(self) -> dict[str, Any]:
        return {"part_weight": self.part_weight, "coarse_weight": self.coarse_weight}

    def required_keys(self, side: Side) -> tuple[str, ...]:
        return ("global", "parts", "coarse") if self.coarse_weight else ("global", "parts")

    def prepare(self, features: Features, side: Side) -> dict[str, Tensor]:
        out = {}
        for key in self.required_keys(side):
            x = features[key]
            unit = _unit_rows(x, compute_dtype(x))
            # Averaging over parts folds into the product: scale each side by 1/sqrt(P).
            out[key] = unit if key == "global" else unit.flatten(1) / math.sqrt(x.shape[1])
        return out

    def _terms(self) -> list[tuple[str, float]]:
        terms = [("global", 1.0), ("parts", self.part_weight)]
        if self.coarse_weight:
            terms.append(("coarse", self.coarse_weight))
        return terms

    def score(self, query: Features, gallery: Features) -> Tensor:
        out: Tensor | None = None
        for key, w in self._terms():
            dtype = compute_dtype(query[key], gallery[key])
            s = query[key].to(dtype) @ gallery[key].to(dtype).T
            out = s if out is None else out + w * s
        assert out is not None
        return out

    def score_pairs(self, query: Features, gallery: Features) -> Tensor:
        out: Tensor | None = None
        for key, w in self._terms():
            dtype = compute_dtype(query[key], gallery[key])
            s = (query[key].to(dtype) * gallery[key].to(dtype)).sum(-1)
            out = s if out is None else out + w * s
        assert out is not None
        return out


_SCORERS: Registry[type[Scorer]] = Registry("scorer", arg="cls")


def register_scorer(kind: str, cls: type[Scorer], *, overwrite: bool = False) -> None:
    """Make ``cls`` known under ``kind``, so configs naming it load (:func:`scorer_from_config`).

    Args:
        kind: the config name; must equal ``cls.kind`` (what :meth:`Scorer.to_config` writes).
        cls: a :class:`Scorer` subclass whose constructor takes its settings as keywords.
        overwrite: replace an existing registration of ``kind``.

    Raises:
        TypeError: ``cls`` is not a :class:`Scorer` subclass, or ``kind`` is not a str.
        ValueError: ``kind`` is empty, differs from ``cls.kind``, or is taken and
            ``overwrite`` is False.
    """
    fn = "register_scorer"
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"{fn}: cls must be a Scorer subclass, got {cls!r}")
    if isinstance(kind, str) and getattr(cls, "kind", None) != kind:
        raise ValueError(
            f"{fn}: {cls.__name__}.kind is {getattr(cls, 'kind', None)!r}, but it is being "
            f"registered as {kind!r}; configs name a scorer by its kind, so they must agree"
        )
    _SCORERS.register(kind, cls, overwrite=overwrite, fn=fn)


def list_scorers() -> list[str]:
    """The registered scorer kinds, sorted."""
    return _SCORERS.names()


def scorer_from_config(config: Mapping[str, Any], *, source: str | None = None) -> Scorer:
    """The scorer a :meth:`Scorer.to_config` dict describes.

    Args:
        config: ``{"kind": ..., **settings}`` (e.g. read from a saved model or index).
        source: where the config came from (a file), named in errors.

    Raises:
        TypeError: ``config`` is not a mapping.
        ValueError: no ``"kind"``, an unknown kind (the registered ones are listed), settings
            the scorer does not take or refuses, or a config too large to be one.
    """
    fn = "scorer_from_config"
    where = f" in {source}" if source else ""
    if not isinstance(config, Mapping):
        raise TypeError(f"{fn}: the scorer config{where} must be a mapping, got {type(config)}")
    try:
        size = len(json.dumps(config))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fn}: the scorer config{where} is not JSON-able ({e})") from None
    if size > _MAX_CONFIG_BYTES:
        raise ValueError(
            f"{fn}: the scorer config{where} has {size} bytes, more than {_MAX_CONFIG_BYTES}"
        )
    kind = config.get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"{fn}: the scorer config{where} has no str 'kind': {dict(config)!r}")
    try:
        cls = _SCORERS.get(kind, fn=fn)
    except ValueError as e:
        raise ValueError(
            f"{fn}: the scorer config{where}: {str(e).removeprefix(fn + ': ')}. Register the "
            "scorer with textreid.retrieval.register_scorer before loading"
        ) from None
    settings = {k: v for k, v in config.items() if k != "kind"}
    try:
        return cls(**settings)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{fn}: the {kind!r} scorer config{where} has settings {settings!r} that "
            f"{cls.__name__} refuses ({e})"
        ) from None


def check_scorer(scorer: object, fn: str) -> Scorer:
    """``scorer`` if it is a :class:`Scorer`; a TypeError naming ``fn`` otherwise."""
    if not isinstance(scorer, Scorer):
        raise TypeError(
            f"{fn}: scorer must be a textreid.retrieval.Scorer (e.g. CosineScorer()), "
            f"got {type(scorer).__name__}"
        )
    return scorer


for _cls in (CosineScorer, GaussianScorer, PartScorer):
    register_scorer(_cls.kind, _cls)
