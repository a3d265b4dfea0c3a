"""What the losses on Gaussian embeddings share: validation, the KL term, soft targets.

Inputs are :class:`~textreid.heads.GaussianEmbedding` pairs (image first, text second) whose
``log_var`` is ``log σ²``. Losses that compare every image with every caption return, for
``reduction="none"``, a :class:`~textreid.losses.DirectionalLosses` of per-row values in which
per-item regularisers (KL) are added to their own row, so ``"sum"`` is the sum of all rows
and ``"mean"`` the mean over image rows plus the mean over caption rows.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from textreid._checks import (
    check_finite,
    check_same_device,
    check_same_width,
    check_tensor,
    resolve_pids,
)
from textreid._gaussian_math import refuse_overflow
from textreid.heads.gaussian import GaussianEmbedding
from textreid.losses._common import DirectionalLosses, compute_dtype

__all__ = [
    "check_embeddings",
    "check_finite_embeddings",
    "check_given_samples",
    "check_match",
    "checked_loss",
    "elementwise_kl",
    "prepare_gaussian_pair",
    "soft_target_ce",
]


def check_embeddings(fn: str, **embeddings: GaussianEmbedding) -> None:
    """Each of ``embeddings`` (by name) is a non-empty :class:`GaussianEmbedding`."""
    for name, g in embeddings.items():
        if not isinstance(g, GaussianEmbedding):
            raise TypeError(f"{fn}: {name} must be a GaussianEmbedding, got {type(g).__name__}")
    for name, g in embeddings.items():
        if len(g) == 0:
            raise ValueError(f"{fn}: empty batch ({name} has 0 rows)")


def check_finite_embeddings(fn: str, **embeddings: GaussianEmbedding) -> None:
    """No NaN/inf in the fields of ``embeddings`` (a host sync: the last check of a call)."""
    for name, g in embeddings.items():
        check_finite(g.mean, f"{name}.mean", fn)
        check_finite(g.log_var, f"{name}.log_var", fn)


def prepare_gaussian_pair(
    fn: str,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None,
    image_pids: Tensor | None,
    text_pids: Tensor | None,
    *,
    finite: bool,
) -> tuple[GaussianEmbedding, GaussianEmbedding, Tensor, Tensor]:
    """Validate an (image, text) pair of Gaussians and resolve the ids.

    Returns:
        ``(image, text, image_pids [B_i], text_pids [B_t])``, the embeddings in the loss's
        compute dtype.
    """
    check_embeddings(fn, image=image, text=text)
    check_same_width(fn, image.mean, "image.mean", text.mean, "text.mean")
    check_same_device(fn, image=image.mean, text=text.mean)
    ip, tp = resolve_pids(fn, image.mean, text.mean, pids, image_pids, text_pids)
    if finite:
        check_finite_embeddings(fn, image=image, text=text)
    dtype = compute_dtype(image.mean, text.mean)
    return image.to(dtype), text.to(dtype), ip, tp


def elementwise_kl(g: GaussianEmbedding, mean: Tensor | None = None) -> Tensor:
    """``KL(N(μ, σ²) ‖ N(0, I))`` per entry ``[B, D]``; ``mean`` replaces ``μ`` when given."""
    mu = g.mean if mean is None else mean
    return 0.5 * (mu.pow(2) + g.log_var.exp() - 1.0 - g.log_var)


def checked_loss(
    fn: str, out: Tensor | DirectionalLosses, finite: bool
) -> Tensor | DirectionalLosses:
    """With ``finite``, refuse a loss that overflowed from finite inputs (a log-variance above
    ~88 has a variance beyond float32; means of ~1e19 have squared distances beyond it)."""
    for t in (out,) if isinstance(out, Tensor) else out:
        refuse_overflow(fn, t, "loss values", finite)
    return out


def check_given_samples(
    fn: str, samples: object, g: GaussianEmbedding, name: str, finite: bool
) -> Tensor:
    """Validate caller-drawn samples ``[B, K, D]`` of the embedding ``g``; return them."""
    s = check_tensor(samples, name, fn, ndim=3, kind="float", dims="(B, K, D)")
    if s.shape[0] != len(g) or s.shape[2] != g.dim:
        raise ValueError(
            f"{fn}: {name} has shape {tuple(s.shape)} but the embedding is ({len(g)}, {g.dim})"
        )
    check_same_device(fn, embedding=g.mean, **{name: s})
    if finite:
        check_finite(s, name, fn)
    return s


def check_match(
    fn: str,
    match: object,
    image: GaussianEmbedding,
    text: GaussianEmbedding,
    pids: Tensor | None,
    image_pids: Tensor | None,
) -> Tensor:
    """Validate labels ``match [B_i, B_t]`` given instead of identities; return them in the
    embeddings' dtype."""
    if pids is not None or image_pids is not None:
        raise ValueError(f"{fn}: pass either match or pids, not both")
    m = check_tensor(match, "match", fn, ndim=2, dims="(B_i, B_t)")
    if m.shape != (len(image), len(text)):
        raise ValueError(
            f"{fn}: match has shape {tuple(m.shape)} but the batch is ({len(image)}, {len(text)})"
        )
    check_same_device(fn, image=image.mean, match=m)
    return m.to(image.mean.dtype)


def soft_target_ce(logits: Tensor, positives: Tensor, log_k: float = 0.0) -> Tensor:
    """Per row ``-mean_{p∈P} [log softmax(logits)_p + log_k]``; 0 for rows without positives."""
    log_p = F.log_softmax(logits, dim=-1) + log_k
    pos = positives.to(logits.dtype)
    count = pos.sum(dim=-1)
    return -(log_p * pos).sum(dim=-1) / count.clamp_min(1.0)
