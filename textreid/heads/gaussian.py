"""Probabilistic (Gaussian) embeddings: the :class:`GaussianEmbedding` container and its head.

Convention used everywhere in textreid: a diagonal Gaussian is stored as its mean ``mean``
``[B, D]`` and its **log-variance** ``log_var = log σ²`` ``[B, D]``. The reference codes name
this tensor differently: PCME++ (naver-ai/pcmepp) calls it ``std`` or ``logsigma`` but it
holds log σ² (author's note in pcmepp issue #4), so pass it unchanged. PCME (naver-ai/pcme)
calls it ``logsigma`` and samples with ``exp(logsigma)`` as the standard deviation (log-std)
while its KL term reads the same tensor as a log-variance; to reproduce its *sampling* from a
log-std tensor ``s`` use ``log_var = 2 * s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from textreid._checks import check_choice, check_finite, check_positive, check_tensor, require
from textreid._numerics import compute_dtype, l2_normalize

__all__ = ["GaussianEmbedding", "GaussianHead", "TokenPooling"]

TokenPooling = Literal["first", "mean", "max", "attention"]
_POOLINGS: tuple[TokenPooling, ...] = ("first", "mean", "max", "attention")


@dataclass(frozen=True)
class GaussianEmbedding:
    """A batch of diagonal Gaussians ``N(mean_b, diag(exp(log_var_b)))``.

    Attributes:
        mean: ``[B, D]`` means (L2-normalised when produced by :class:`GaussianHead` with
            ``normalize_mean=True``).
        log_var: ``[B, D]`` log-variances ``log σ²`` (never log-std; see the module docstring).

    Raises:
        TypeError: a field is not a floating tensor.
        ValueError: a field is not 2-D, the shapes, dtypes or devices differ, or ``D == 0``.

    Indexing with an int, a slice, a bool mask or an index tensor selects rows and always
    returns a 2-D :class:`GaussianEmbedding` (an int ``i`` gives one row, ``[1, D]``).
    """

    mean: Tensor
    log_var: Tensor

    def __post_init__(self) -> None:
        fn = "GaussianEmbedding"
        check_tensor(self.mean, "mean", fn, ndim=2, kind="float", dims="(B, D)", allow_empty=True)
        check_tensor(
            self.log_var, "log_var", fn, ndim=2, kind="float", dims="(B, D)", allow_empty=True
        )
        if self.mean.shape != self.log_var.shape:
            raise ValueError(
                f"{fn}: mean has shape {tuple(self.mean.shape)} but log_var has shape "
                f"{tuple(self.log_var.shape)}; they must match"
            )
        if self.mean.shape[1] == 0:
            raise ValueError(
                f"{fn}: zero-sized embedding dimension, shape {tuple(self.mean.shape)}"
            )
        if self.mean.dtype != self.log_var.dtype:
            raise ValueError(
                f"{fn}: mean has dtype {self.mean.dtype} but log_var has dtype {self.log_var.dtype}"
            )
        if self.mean.device != self.log_var.device:
            raise ValueError(
                f"{fn}: mean is on {self.mean.device} but log_var is on {self.log_var.device}"
            )

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def __getitem__(self, index: int | slice | Tensor) -> GaussianEmbedding:
        if isinstance(index, int):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"GaussianEmbedding: index {index} out of range for {n} rows")
            index = slice(index, index + 1 if index != -1 else None)
        return GaussianEmbedding(self.mean[index], self.log_var[index])

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return int(self.mean.shape[1])

    @property
    def variance(self) -> Tensor:
        """``[B, D]`` variances ``σ² = exp(log_var)``."""
        return self.log_var.exp()

    @property
    def std(self) -> Tensor:
        """``[B, D]`` standard deviations ``σ = exp(log_var / 2)``."""
        return (0.5 * self.log_var).exp()

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``K`` reparameterised samples ``z = mean + ε ⊙ σ``, ``ε ~ N(0, I)``.

        Args:
            num_samples: ``K >= 1``.
            generator: optional :class:`torch.Generator` (on the embedding's device) for
                reproducible draws; the global RNG otherwise.

        Returns:
            ``[B, K, D]`` samples, differentiable with respect to ``mean`` and ``log_var``.

        Raises:
            ValueError: ``num_samples < 1``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"GaussianEmbedding.sample: num_samples must be an int >= 1, got {num_samples!r}"
            )
        b, d = self.mean.shape
        eps = torch.randn(
            (b, num_samples, d),
            generator=generator,
            device=self.mean.device,
            dtype=self.mean.dtype,
        )
        return self.mean[:, None, :] + eps * self.std[:, None, :]

    def uncertainty(self) -> Tensor:
        """``[B]`` scalar uncertainty per item: the mean variance ``(1/D) Σ_d σ²_d``.

        This is the readout of the PCME++ authors' example (``exp(log σ²).mean(-1)``); their
        evaluation code uses the sum, which is ``D`` times this value (same ranking). Computed
        in float32 for half inputs (float16 overflows from ``log σ² ≈ 11``).
        """
        return self.log_var.to(compute_dtype(self.log_var)).exp().mean(dim=-1)

    def to(self, *args: Any, **kwargs: Any) -> GaussianEmbedding:
        """Move / cast both fields, with the arguments of :meth:`torch.Tensor.to`."""
        return GaussianEmbedding(self.mean.to(*args, **kwargs), self.log_var.to(*args, **kwargs))

    def detach(self) -> GaussianEmbedding:
        """Both fields detached from the autograd graph."""
        return GaussianEmbedding(self.mean.detach(), self.log_var.detach())


class _AttentionPool(nn.Module):
    """One-head additive attention pooling ``softmax_n(w₂ᵀ tanh(W₁ x_n))`` (PIE-Net / PCME)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, tokens: Tensor, key_mask: Tensor | None) -> Tensor:
        logits = self.score(torch.tanh(self.proj(tokens))).squeeze(-1).float()
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask, torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1).to(tokens.dtype)
        return torch.einsum("bn,bnw->bw", weights, tokens)


class GaussianHead(nn.Module):
    """Map features of one modality to a diagonal Gaussian (mean and log-variance).

    Use one head per modality (an image head and a text head): the two encoders' features
    live in different spaces and their uncertainty has different sources (PCME, PCME++ and
    UCA all use separate heads).

    ``mean = n(W_μ pool_μ(x) + b_μ)`` (``n`` = L2 normalisation when ``normalize_mean``) and
    ``log_var = W_σ pool_σ(x) + b_σ`` (never normalised). ``W_σ`` starts at zero and ``b_σ`` at
    ``init_log_var``, so every variance starts at ``exp(init_log_var)``: small (the means
    dominate the first steps, as with a deterministic model) but finite, so gradients reach
    the variance branch from the first step.

    Args:
        in_dim: input width ``W``.
        embed_dim: output width ``D``.
        normalize_mean: L2-normalise the mean (PCME, PCME++).
        token_pooling: how token states ``[B, N, W]`` are pooled to ``[B, W]``: ``"first"``
            (the class token), ``"mean"`` / ``"max"`` over real tokens, or ``"attention"``
            (a separate additive-attention pool per branch, as PCME's log σ head). Pooled
            inputs ``[B, W]`` skip pooling.
        init_log_var: initial log-variance of every dimension.
        attention_hidden: hidden width of the attention pools.
        check_finite: raise on NaN/inf features and on projections that overflow the
            module's dtype (two host syncs per call).

    Shapes:
        features ``[B, W]`` or ``[B, N, W]``; ``key_mask`` bool ``[B, N]``, True = real token.
        Returns a :class:`GaussianEmbedding` with fields ``[B, D]``.

    Numerics: mean pooling accumulates in float32 for half inputs, and the mean is
    normalised in float32 by :func:`~textreid._numerics.l2_normalize` (a zero mean stays zero
    with a bounded gradient) and cast back; the fields have the projections' dtype.

    Raises:
        ValueError: bad sizes or pooling name at construction; bad input rank, width or mask at
            call time; with ``check_finite``, non-finite features or projections.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        normalize_mean: bool = True,
        token_pooling: TokenPooling = "first",
        init_log_var: float = -5.0,
        attention_hidden: int = 256,
        *,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        fn = "GaussianHead"
        check_positive(in_dim, "in_dim", fn)
        check_positive(embed_dim, "embed_dim", fn)
        check_positive(attention_hidden, "attention_hidden", fn)
        self.token_pooling: TokenPooling = check_choice(
            token_pooling, "token_pooling", fn, _POOLINGS
        )
        self.in_dim = in_dim
        self.embed_dim = embed_dim
        self.normalize_mean = normalize_mean
        self.check_finite = check_finite
        self.mean_proj = nn.Linear(in_dim, embed_dim)
        self.log_var_proj = nn.Linear(in_dim, embed_dim)
        nn.init.zeros_(self.log_var_proj.weight)
        nn.init.constant_(self.log_var_proj.bias, float(init_log_var))
        self.mean_pool: _AttentionPool | None = None
        self.log_var_pool: _AttentionPool | None = None
        if token_pooling == "attention":
            self.mean_pool = _AttentionPool(in_dim, attention_hidden)
            self.log_var_pool = _AttentionPool(in_dim, attention_hidden)

    def _pool(self, tokens: Tensor, key_mask: Tensor | None, attn: _AttentionPool | None) -> Tensor:
        if attn is not None:
            out: Tensor = attn(tokens, key_mask)
            return out
        if self.token_pooling == "first":
            return tokens[:, 0]
        mask = (
            key_mask
            if key_mask is not None
            else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        )
        if self.token_pooling == "mean":
            # a float16 sum over many tokens overflows long before their mean does
            dt = compute_dtype(tokens)
            m = mask.to(dt)[..., None]
            pooled = (tokens.to(dt) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
            return pooled.to(tokens.dtype)
        fill = torch.finfo(tokens.dtype).min
        return tokens.masked_fill(~mask[..., None], fill).amax(dim=1)

    def forward(self, features: Tensor, key_mask: Tensor | None = None) -> GaussianEmbedding:
        """Features ``[B, W]`` or tokens ``[B, N, W]`` (+ ``key_mask`` ``[B, N]``) → Gaussian."""
        fn = "GaussianHead"
        x = check_tensor(
            features, "features", fn, ndim=(2, 3), kind="float", dims="(B, W) or (B, N, W)"
        )
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"{fn}: features has width {x.shape[-1]} but in_dim is {self.in_dim}")
        if self.check_finite:
            check_finite(x, "features", fn)
        if x.dim() == 2:
            if key_mask is not None:
                raise ValueError(f"{fn}: key_mask is only valid with token features (B, N, W)")
            pooled_mean = pooled_var = x
        else:
            if key_mask is not None:
                check_tensor(key_mask, "key_mask", fn, ndim=2, kind="bool", dims="(B, N)")
                if key_mask.shape != x.shape[:2]:
                    raise ValueError(
                        f"{fn}: key_mask has shape {tuple(key_mask.shape)} but features has "
                        f"{tuple(x.shape[:2])} tokens"
                    )
                empty_row = f"{fn}: key_mask has a row without any real token"
                require(key_mask.any(dim=1).all(), lambda: empty_row, empty_row)
            pooled_mean = self._pool(x, key_mask, self.mean_pool)
            pooled_var = self._pool(x, key_mask, self.log_var_pool)
        mean = self.mean_proj(pooled_mean)
        log_var = self.log_var_proj(pooled_var)
        if self.check_finite:
            for name, t in (("mean projection", mean), ("log-variance projection", log_var)):
                over = (
                    f"{fn}: the {name} overflows {t.dtype}; the features are too large for "
                    "this head"
                )

                def message(over: str = over) -> str:
                    return f"{over} (largest |feature| {float(x.detach().abs().amax()):.3g})"

                require(torch.isfinite(t).all(), message, over)
        if self.normalize_mean:
            mean = l2_normalize(mean).to(mean.dtype)
        return GaussianEmbedding(mean, log_var)
